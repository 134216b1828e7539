"""Secrets never reach a log line, whichever library writes it.

The SASL password has to reach the Kafka clients as a plain string, and the clients log what
they hold and send: at DEBUG, kafka-python's admin client dumps its configuration ("Starting
KafkaAdminClient with configuration: ..."), and each of its connections logs every request it
sends, SASL/PLAIN's SaslAuthenticate included, whose bytes carry the password in clear.
Masking at each source cannot cover every line of two libraries, now and in their next
versions, so the adapters take every secret they hand to a client through `reveal`, which
registers it, and a log-record factory, installed once per process, masks every registered
secret in each record as it is made: the message with its arguments, and the traceback text.
Every logger and every handler (the CLI's, pytest's, the demo's) then only ever sees the mask.

The secret is masked as it is, as Python shows it inside a str or a bytes repr, and as JSON
escapes it, so `b'\\x00user\\x00pa$$word'` in a request dump is caught as well.

>>> import logging
>>> from pydantic import SecretStr
>>> value = reveal(SecretStr("hunter2-doctest"))
>>> value
'hunter2-doctest'
>>> record = logging.getLogger("kafka.demo").makeRecord(
...     "kafka.demo", logging.DEBUG, __file__, 1, "sent %r", (b"\\x00u\\x00" + value.encode(),),
...     None)
>>> record.getMessage()
"sent b'\\\\x00u\\\\x00**********'"
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from pydantic import SecretStr

MASK = "**********"

_lock = threading.Lock()
_forms: tuple[str, ...] = ()  # every registered secret in every form it may be shown in
_previous_factory: Any = None


def reveal(secret: SecretStr) -> str:
    """The secret's value for a client that needs it in plain text; from now on it is masked
    in every log record of this process."""
    value = secret.get_secret_value()
    protect(value)
    return value


def protect(value: str) -> None:
    """Mask `value` in every log record made from now on (idempotent)."""
    global _forms
    if not value:
        return
    forms = {value, repr(value)[1:-1], repr(value.encode())[2:-1], json.dumps(value)[1:-1]}
    with _lock:
        _install()
        # Longest first: a form that contains another is replaced whole.
        _forms = tuple(sorted(set(_forms) | forms, key=len, reverse=True))


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by the mask.

    >>> protect("s3cr3t-doctest")
    >>> scrub("password=s3cr3t-doctest; again: 's3cr3t-doctest'")
    "password=**********; again: '**********'"
    """
    for form in _forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def _install() -> None:
    """Wrap the current log-record factory once (a later wrapper of ours would mask twice)."""
    global _previous_factory
    if _previous_factory is not None:
        return
    _previous_factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_make_record)


def _make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record: logging.LogRecord = _previous_factory(*args, **kwargs)
    if _forms:
        _scrub_record(record)
    return record


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record: logging reports it when emitted
        return
    masked = scrub(message)
    if masked != message:
        record.msg, record.args = masked, ()
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text when it is set: format the traceback now, masked.
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
