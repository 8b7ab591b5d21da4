"""The detail tree of the selected frame: every decoded field, by :func:`vuinspect.render.tree`.

Feature and status words get one child per bit name, fds show their kinds,
``Reply in/to frame N`` rows jump to the pair (Enter).  Moving the tree cursor
tells the hex pane which bytes to highlight.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message as TMessage
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from vuinspect.message import Message
from vuinspect.render import safe_text
from vuinspect.render import tree as tree_rows


@dataclass(frozen=True, slots=True)
class NodeRef:
    """What a tree node stands for: message ``part`` of the frame, field ``key``."""

    part: int
    key: str
    jump: int | None = None  # frame number to jump to (reply pair)


class DetailTree(Tree[NodeRef]):
    """Fields of the messages of one frame."""

    class FieldHighlighted(TMessage):
        def __init__(self, part: int, key: str) -> None:
            super().__init__()
            self.part = part
            self.key = key

    class JumpRequested(TMessage):
        def __init__(self, frame: int) -> None:
            super().__init__()
            self.frame = frame

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__("No message selected", name=name, id=id, classes=classes)
        self.show_root = False
        self.guide_depth = 2
        self.msgs: list[Message] = []
        self._last_key: str | None = None

    @property
    def current(self) -> NodeRef | None:
        node = self.cursor_node
        return node.data if node is not None else None

    def show(self, msgs: list[Message], title: str, comment: str | None = None) -> None:
        """Replace the tree with ``msgs``, keeping the cursor on the same field if it exists.

        ``comment`` (the frame's pcapng comment) comes first, as in Wireshark.
        """
        keep = self._last_key
        self.msgs = msgs
        self.clear()
        self.root.set_label(Text(safe_text(title)))
        target: TreeNode[NodeRef] | None = None
        if comment:
            node = self.root.add_leaf(
                Text("Comment: " + safe_text(comment), style="bold cyan"), NodeRef(0, "comment")
            )
            target = node if keep == "comment" else None
        for part, msg in enumerate(msgs):
            parent = self.root
            if len(msgs) > 1:
                parent = self.root.add(
                    Text(f"Message {part + 1} of {len(msgs)}: {msg.name}", style="bold"),
                    NodeRef(part, ""),
                    expand=True,
                )
            found = self._add_message(parent, part, msg, keep)
            target = target or found
        if target is not None:
            self.move_cursor(target)
        elif self.root.children:
            self.move_cursor(self.root.children[0])

    def _add_message(
        self, parent: TreeNode[NodeRef], part: int, msg: Message, keep: str | None
    ) -> TreeNode[NodeRef] | None:
        rows = tree_rows(msg)
        stack: list[TreeNode[NodeRef]] = [parent]
        found = None
        for i, (depth, key, text) in enumerate(rows):
            del stack[depth + 1 :]
            jump = (
                msg.reply_to if key == "reply_to" else msg.reply_in if key == "reply_in" else None
            )
            ref = NodeRef(part, key, jump)
            label = self._label(key, text)
            names = self._names(msg, key)
            has_children = i + 1 < len(rows) and rows[i + 1][0] > depth
            if has_children or names:
                node = stack[-1].add(label, ref, expand=True)
                for n in names or ():
                    node.add_leaf(Text(safe_text(n)), ref)
            else:
                node = stack[-1].add_leaf(label, ref)
            stack.append(node)
            if keep is not None and key == keep and found is None:
                found = node
        return found

    @staticmethod
    def _names(msg: Message, key: str) -> list[str] | None:
        if not key.startswith("payload.") or not key.endswith("_names"):
            return None
        value: object = msg.payload
        for part in key.split(".")[1:]:
            value = value.get(part) if isinstance(value, dict) else None
        return list(value) if isinstance(value, list) else None

    @staticmethod
    def _label(key: str, text: str) -> Text:
        if key.endswith("_names"):
            field, _, _ = text.partition(":")
            return Text(f"{field} ({len(text.split(':', 1)[1].split())} set)")
        if key in ("header", "payload", "fds"):
            return Text(text, style="bold")
        if key in ("reply_to", "reply_in"):
            return Text(text + "  ⏎ jump", style="bold underline")
        if key == "problems":
            return Text(text, style="bold red")
        if key.startswith("problems."):
            return Text(text, style="red" if " error " in f" {text} " else "yellow")
        return Text(text)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[NodeRef]) -> None:
        ref = event.node.data
        if ref is None:
            return
        event.stop()
        self._last_key = ref.key
        self.post_message(self.FieldHighlighted(ref.part, ref.key))

    def on_tree_node_selected(self, event: Tree.NodeSelected[NodeRef]) -> None:
        ref = event.node.data
        if ref is not None and ref.jump is not None:
            event.stop()
            self.post_message(self.JumpRequested(ref.jump))
