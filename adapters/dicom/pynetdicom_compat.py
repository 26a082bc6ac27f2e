"""pynetdicom's private workings that the storage SCP relies on for speed, fenced to the release they were read in.

pynetdicom's public API leaves three costs of a C-STORE in place: every association deep-copies the server's
presentation contexts (re-validating each UID), the DUL reactor sleeps ``DULServiceProvider._run_loop_delay``
whenever it found nothing to do, and the association reactor (``Association._run_reactor``) sleeps before
every look at its DIMSE queue. The tuning here works around them through names pynetdicom does not
promise to keep, and one more private name, ``AE._servers``, lets a server of our own class be registered
with its AE as ``AE.start_server`` registers its own. Every such use lives in this module and nowhere else.

The fence: :func:`tuning_applies` compares the installed pynetdicom (``importlib.metadata``) with
:data:`WRITTEN_FOR`. On any other release the tuning stands down with one warning and :func:`start_server`
starts pynetdicom's stock server (``AE.start_server``): slower, but nothing here touches the new release's
private names. ``pyproject.toml`` pins the tested minor release.

:func:`silence_standard_event_logging` is not fenced: it sets pynetdicom's documented configuration
``pynetdicom._config.LOG_HANDLER_LEVEL``.
"""
from __future__ import annotations

import functools
import importlib.metadata
import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom import association as association_module
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

#: The pynetdicom release (major, minor) whose private names this module was written against and tested with.
WRITTEN_FOR = (3, 0)

#: Seconds the DUL reactor sleeps after a loop that found nothing to do, instead of pynetdicom's 0.001. A
#: C-STORE waits for that loop twice (to notice the request on the socket and to send the response); an idle
#: association then wakes ten times as often until ``network_timeout`` ends it.
DUL_LOOP_DELAY = 0.0001

#: The one sleep of the association reactor (``Association._run_reactor``) in pynetdicom 3.0: it sleeps this
#: long before every look at its DIMSE queue, so a request that arrives meanwhile waits for the sleep to end.
REACTOR_SLEEP = 0.001

#: Releases already warned about (one warning per release and process).
_stood_down: set[str | None] = set()


@functools.cache
def installed_release() -> str | None:
    """The installed pynetdicom distribution's version, or None when its metadata is missing."""
    try:
        return importlib.metadata.version("pynetdicom")
    except importlib.metadata.PackageNotFoundError:
        return None


def tuning_applies() -> bool:
    """Whether the installed pynetdicom is the :data:`WRITTEN_FOR` minor release (any patch level).

    Otherwise logs, once, that the tuning stands down, and returns False.
    """
    version = installed_release()
    parsed = re.match(r"(\d+)\.(\d+)", version or "")
    if parsed and (int(parsed[1]), int(parsed[2])) == WRITTEN_FOR:
        return True
    if version not in _stood_down:
        _stood_down.add(version)
        log.warning("pynetdicom %s is not the %d.%d release the SCP's tuning was written for: running with "
                    "pynetdicom's stock association server (slower, same answers)", version or "(unknown version)",
                    *WRITTEN_FOR)
    return False


def silence_standard_event_logging() -> None:
    """Bind none of pynetdicom's standard event handlers to servers and associations created from now on.

    They format every PDU and DIMSE message (copying each data set to see whether it is empty) for log lines
    at INFO/DEBUG, some of which carry identifiers; the SCP does not want those lines, nor their cost per
    C-STORE. pynetdicom's documented switch (``pynetdicom._config.LOG_HANDLER_LEVEL``) is read whenever a
    server or association binds its default handlers, so it is process-wide and must be set before the
    server is made. pynetdicom's warnings and errors are still logged.
    """
    _config.LOG_HANDLER_LEVEL = "none"


class _ReactorClock:
    """Stands in for the ``time`` module inside ``pynetdicom.association`` (see :func:`install_reactor_clock`).

    In an acceptor's reactor thread, its sleep of :data:`REACTOR_SLEEP` becomes a wait on the association's
    DIMSE queue that ends as soon as a message is queued, and otherwise lasts as long as the sleep: no latency
    for a request, no more wake-ups than before when idle. Every other call is the ``time`` module's own.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        assoc = threading.current_thread()
        if seconds != REACTOR_SLEEP or not isinstance(assoc, Association) or not assoc.is_acceptor:
            time.sleep(seconds)
            return
        pending = assoc.dimse.msg_queue
        with pending.not_empty:
            if not pending.queue:
                pending.not_empty.wait(seconds)
            if pending.queue:  # a wake-up taken here may have been meant for another waiter: pass it on
                pending.not_empty.notify()


def install_reactor_clock() -> bool:
    """Let pynetdicom's association reactors wake up for a DIMSE message instead of sleeping through it.

    Process-wide and idempotent; installed only over the ``time`` module it replaces, and only when
    :func:`tuning_applies`. Returns whether the clock is in place.
    """
    if not tuning_applies():
        return False
    if association_module.time is time:
        association_module.time = _ReactorClock()  # type: ignore[assignment]
    return isinstance(association_module.time, _ReactorClock)


def tune_association(event: evt.Event) -> None:
    """EVT_CONN_OPEN: shorten a freshly accepted association's DUL idle sleep to :data:`DUL_LOOP_DELAY`.

    Set only when the private attribute is there with the expected type.
    """
    dul = event.assoc.dul
    if isinstance(getattr(dul, "_run_loop_delay", None), float):
        dul._run_loop_delay = DUL_LOOP_DELAY


class SharedUidContext(PresentationContext):
    """A presentation context whose deep copy shares its (immutable) UID strings.

    pynetdicom deep-copies the server's supported contexts for every association; with every storage SOP
    class × every transfer syntax that is ~5,000 UIDs, each re-validated by a regular expression, at each
    association request (inside the sender's timed send).
    """

    @classmethod
    def like(cls, context: PresentationContext) -> SharedUidContext:
        """A copy of ``context``: its lists copied, their UIDs (immutable ``str``) and scalars shared."""
        twin = cls.__new__(cls)
        twin.__dict__.update({k: list(v) if isinstance(v, list) else v for k, v in vars(context).items()})
        return twin

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedUidContext:
        return self.like(self)


class TunedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with the tuning of this module.

    Contexts copied cheaply per association (:class:`SharedUidContext`), :func:`tune_association` on every
    accepted connection and :func:`install_reactor_clock`; none of it unless :func:`tuning_applies`. Start
    it with :func:`start_server`.
    """

    def __init__(self, ae: AE, address: tuple[str, int], ae_title: str, contexts: list[PresentationContext],
                 ssl_context: Any = None, evt_handlers: list[Any] | None = None, **kwargs: Any) -> None:
        handlers = list(evt_handlers or ())
        if tuning_applies():
            handlers.insert(0, (evt.EVT_CONN_OPEN, tune_association))
            contexts = [SharedUidContext.like(cx) for cx in contexts]
            install_reactor_clock()
        super().__init__(ae, address, ae_title, contexts, ssl_context, handlers, **kwargs)


def start_server(ae: AE, address: tuple[str, int], evt_handlers: Sequence[Any],
                 server_class: type[TunedAssociationServer] = TunedAssociationServer,
                 ssl_context: Any = None) -> ThreadedAssociationServer:
    """Start a non-blocking association server of ``server_class``, as ``AE.start_server(block=False)`` starts
    one of pynetdicom's own class; stop it with its ``shutdown()``.

    ``AE.start_server`` takes no server class, and ``AE.make_server`` (which does) leaves the server
    unknown to its AE, whose ``shutdown()`` — and the server's own, which removes it from the AE's list —
    expect it registered: it is registered in ``AE._servers`` as ``AE.start_server`` does. When the tuning
    stands down, ``AE.start_server`` itself starts pynetdicom's stock server. Either way pynetdicom's
    standard event logging is off (:func:`silence_standard_event_logging`). ``ssl_context`` (documented in both
    ``AE.start_server`` and ``AE.make_server``): the server accepts TLS connections only.
    """
    silence_standard_event_logging()
    if not tuning_applies():
        server = ae.start_server(address, block=False, evt_handlers=list(evt_handlers), ssl_context=ssl_context)
        assert server is not None  # non-blocking: AE.start_server returns the running server
        return server
    server = ae.make_server(address, evt_handlers=list(evt_handlers), server_class=server_class,
                            ssl_context=ssl_context)
    ae._servers.append(server)
    threading.Thread(target=server.serve_forever, name=f"{server_class.__name__}@{address[1]}", daemon=True).start()
    return server
