"""The runner's --messages file: one body per newline-ended line, nothing else splits a job."""

from __future__ import annotations

import json

import pytest

from kling_local.runner import message_lines

# Characters str.splitlines() treats as line ends; JSON strings and prompts may hold them raw.
SPLITLINES_ONLY = ["\u2028", "\u2029", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\r"]


@pytest.mark.parametrize("separator", SPLITLINES_ONLY)
def test_message_lines_keeps_one_job_when_line_holds_a_unicode_line_break(separator: str) -> None:
    # Given a job whose prompt holds a character splitlines() would split on
    body = json.dumps({"prompt": f"a fox{separator}in snow", "job_id": "one"}, ensure_ascii=False)
    plain = f"a lighthouse{separator}at dusk"
    data = f"{body}\n{plain}\n".encode()
    # When the file is read
    lines = message_lines(data)
    # Then each line is exactly one message, byte for byte
    assert lines == [body, plain]


def test_message_lines_skips_blank_lines_and_strips_crlf_and_file_bom() -> None:
    data = '\ufeff{"prompt": "a"}\r\n\r\n   \nplain prompt\r\n'.encode()
    assert message_lines(data) == ['{"prompt": "a"}', "plain prompt"]
