"""The dashboard's logging: the services' info lines reach the server log, configured once per process."""

from __future__ import annotations

import logging

import pytest

from tests.support.apptest import APP
from ui import logs


def _our_handlers(name: str) -> list[logging.Handler]:
    return [h for h in logging.getLogger(name).handlers if h.name == logs.HANDLER_NAME]


def test_configured_once_however_often_app_py_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_LOG_LEVEL", "info")
    logs.configure_logging()
    logs.configure_logging()  # a rerun of app.py
    for name in logs.PACKAGES:
        assert len(_our_handlers(name)) == 1
    service = logging.getLogger("core.records.patients")
    assert service.isEnabledFor(logging.INFO) and not service.isEnabledFor(logging.DEBUG)
    assert "configure_logging()" in APP.read_text()


def test_an_info_line_of_a_service_is_written(capfd: pytest.CaptureFixture[str]) -> None:
    before = {name: _our_handlers(name) for name in logs.PACKAGES}
    for name, handlers in before.items():  # start afresh, so the handler writes to this test's stderr
        for handler in handlers:
            logging.getLogger(name).removeHandler(handler)
    try:
        logs.configure_logging()
        logging.getLogger("core.xray.diagnosis").info("diagnosed study %d", 7)
        assert "INFO core.xray.diagnosis: diagnosed study 7" in capfd.readouterr().err
    finally:
        for name, handlers in before.items():
            for handler in _our_handlers(name):
                logging.getLogger(name).removeHandler(handler)
            for handler in handlers:
                logging.getLogger(name).addHandler(handler)
