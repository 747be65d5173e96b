# Failures that nobody retrieved: reported when their future dies.

# ---------------------------------------------------------------- reports

cdef list _unretrieved = []    # (text, exc): appended by finalizers in any thread
cdef int _report_scheduled = 0   # a pending call will flush it (atomic)
_report_lock = threading.Lock()  # one flush at a time
# Set at interpreter exit (_shutdown_at_exit, before atexit's handlers: so
# before logging shuts down): from then on a report goes straight to stderr,
# at once. Futures still referenced at exit die while the interpreter tears
# its modules down, when a deferred report would find logging gone.
cdef bint _at_exit = False
# kept at import: module teardown clears the modules' own globals
cdef object _sys = sys
cdef object _format_exception = traceback.format_exception
cdef str _REPORT = "forkwait: a future failed and nobody retrieved its exception: %s"


cdef int _report_pending(void *arg) noexcept with gil:
    FW_STORE(&_report_scheduled, 0)
    try:
        _flush_unretrieved()
    except BaseException:
        pass
    return 0


def _flush_unretrieved():
    """Log the failures collected by finalizers (a safe point, not a finalizer)."""
    with _report_lock:
        # the first n, taken out in place: finalizers may append meanwhile
        n = len(_unretrieved)
        items = _unretrieved[:n]
        del _unretrieved[:n]
    for text, exc in items:
        if _at_exit:
            _report_to_stderr(text, exc)
            continue
        try:
            _logger.error(_REPORT, text, exc_info=(type(exc), exc, exc.__traceback__))
        except BaseException:  # logging may be gone
            _report_to_stderr(text, exc)


cdef void _report_to_stderr(str text, object exc) noexcept:
    """The report, written to stderr without logging (at exit)."""
    try:
        lines = _format_exception(type(exc), exc, exc.__traceback__)
        _sys.stderr.write((_REPORT % text) + "\n" + "".join(lines))
        _sys.stderr.flush()
    except BaseException:
        pass


cdef void _defer_unretrieved_report(size_t addr, object exc) noexcept:
    """From a dying future: keep the failure and log it later, at a safe point.

    Formatting a traceback while an object is collected runs arbitrary code
    (linecache, and on CPython 3.11 even ast.parse) in the middle of whatever
    the collecting thread was doing, which broke an ast.parse running there.
    """
    try:
        text = f"<forkwait.Future at {addr:#x} state=finished raised {type(exc).__name__}>"
        if _at_exit:
            _report_to_stderr(text, exc)
            return
        _unretrieved.append((text, exc))
        if fw_cas_int(&_report_scheduled, 0, 1):
            if Py_AddPendingCall(_report_pending, NULL) != 0:
                FW_STORE(&_report_scheduled, 0)
    except BaseException:
        pass


def _unretrieved_pending():
    """(Tests) the failures collected and not yet reported, as (text, exc)."""
    return list(_unretrieved)


def _defer_report_for_tests(exc):
    """(Tests) collect `exc` as a dying future's failure is, without
    scheduling its report (that is _flush_unretrieved's, by hand)."""
    _unretrieved.append(("<forkwait.Future at 0x0 (a test's)>", exc))


def _exit_reports():
    """atexit's hook (registered after logging's, so run before logging shuts
    down): the reports collected so far go to logging, and so do the failures
    of futures still alive now (a module-level list of forks nobody waited
    on: the interpreter may never free them, the free-threaded one at
    least); later ones, of futures that die while the interpreter tears its
    modules down, to stderr."""
    global _at_exit
    cdef _FailureGuard g
    for ref in list(_armed.values()):
        g = ref()
        if g is not None and g.exc is not None:
            exc = g.exc
            g.exc = None
            _unretrieved.append((
                f"<forkwait.Future at {g.addr:#x} state=finished raised {type(exc).__name__}> "
                "(still referenced at exit)", exc,
            ))
    _armed.clear()
    _flush_unretrieved()
    _at_exit = True
