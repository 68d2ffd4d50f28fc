"""Incremental detokenisation with stop strings, one instance per answer being decoded.

Decoding the whole answer every step costs O(length) per token; instead we decode a short window
and emit the new suffix (the prefix/read offsets of Hugging Face text-generation-inference's
``decode_token``). Text that ends in an incomplete UTF-8 sequence (U+FFFD) is held back, and so
is any tail that could still grow into a stop string, so a streamed client never sees text that
a later stop match would have cut.

Stop matching looks only at the tail that new text can complete (the new characters plus the
longest stop's length), so a step costs the same however long the answer has grown; the API caps
how many stop strings there are and how long (``max_stop_sequences``, ``max_stop_chars``).
"""

from __future__ import annotations

from typing import Any


class StreamDecoder:
    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self._tok = tokenizer
        self._stop = sorted({s for s in stop if s})
        self._longest = max((len(s) for s in self._stop), default=0)
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self.text = ""  # decoded so far (cut at a stop string once one matched)
        self.emitted = 0  # characters of ``text`` already handed out
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to emit (may be empty)."""
        self._ids.append(token_id)
        prefix_text = self._tok.decode(
            self._ids[self._prefix : self._read], skip_special_tokens=True
        )
        new_text = self._tok.decode(self._ids[self._prefix :], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            before = len(self.text)
            self.text += new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
            self._match_stop(before)
        return self._take(final=self.stopped)

    def finish(self) -> str:
        """The answer ended (EOS or length): release whatever was held back."""
        if not self.stopped and self._read < len(self._ids):
            # Tokens still waiting for the rest of a UTF-8 sequence: decode them as they are.
            prefix_text = self._tok.decode(
                self._ids[self._prefix : self._read], skip_special_tokens=True
            )
            new_text = self._tok.decode(self._ids[self._prefix :], skip_special_tokens=True)
            before = len(self.text)
            self.text += new_text[len(prefix_text) :]
            self._read = len(self._ids)
            self._match_stop(before)
        return self._take(final=True)

    def _match_stop(self, before: int) -> None:
        if not self._longest:
            return
        # Only a window that includes new characters can hold a new match.
        start = max(0, before - self._longest + 1)
        hits = [pos for s in self._stop if (pos := self.text.find(s, start)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def _held_back(self) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
        # A proper prefix is shorter than the longest stop: only that tail of the text matters,
        # and within it only positions holding a stop's first character can start one.
        tail = self.text[max(0, len(self.text) - self._longest + 1) :]
        best = 0
        for s in self._stop:
            at = tail.find(s[0])
            while at >= 0 and len(tail) - at > best:
                if len(tail) - at < len(s) and s.startswith(tail[at:]):
                    best = len(tail) - at
                    break
                at = tail.find(s[0], at + 1)
        return best

    def _take(self, final: bool) -> str:
        end = len(self.text) if final else len(self.text) - self._held_back()
        if end <= self.emitted:
            return ""
        out = self.text[self.emitted : end]
        self.emitted = end
        return out
