"""Library chatter goes to the run's log (debug Log events), not to stderr over the live panel
(engine/events/library_logs.py)."""
from __future__ import annotations

import logging
import warnings

from engine.events import types as ev
from engine.events.library_logs import library_chatter_to_log
from sdxl_tui.console_view import event_line


def test_library_warnings_become_debug_log_events(capsys):
    events: list = []
    transformers_logger = logging.getLogger("transformers.modeling_utils")
    before = logging.getLogger("transformers").handlers[:]
    with library_chatter_to_log(events.append):
        transformers_logger.warning("Some weights were not initialized")
        logging.getLogger("diffusers").warning("deprecated argument")
        warnings.warn("a library's UserWarning", UserWarning)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    messages = [e.message for e in events]
    assert any(m.startswith("transformers.modeling_utils: Some weights") for m in messages)
    assert any(m.startswith("diffusers: deprecated") for m in messages)
    assert any("a library's UserWarning" in m for m in messages)
    assert all(isinstance(e, ev.Log) and e.level == "debug" for e in events)
    assert all(event_line(e) is None for e in events)  # the live views skip them; events.jsonl keeps them
    assert logging.getLogger("transformers").handlers == before  # restored


def test_a_library_that_sets_up_its_handler_later_is_taken_back(capsys):
    events: list = []
    library = logging.getLogger("diffusers")
    with library_chatter_to_log(events.append) as redirect:
        library.handlers = [logging.StreamHandler()]  # what diffusers does when first imported
        library.propagate = False
        redirect.reroute()  # the run calls this before each model part loads
        logging.getLogger("diffusers.models").warning("kept in float32")
    assert capsys.readouterr().err == ""
    assert [e.message for e in events] == ["diffusers.models: kept in float32"]
