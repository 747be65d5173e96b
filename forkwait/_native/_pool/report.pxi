# Failures that nobody retrieved: reported when their future dies.

# ---------------------------------------------------------------- reports

cdef list _unretrieved = []
cdef bint _report_scheduled = False


cdef int _report_pending(void *arg) noexcept with gil:
    global _report_scheduled
    _report_scheduled = False
    _flush_unretrieved()
    return 0


def _flush_unretrieved():
    """Log the failures collected by finalizers (a safe point, not a finalizer)."""
    global _unretrieved
    items = _unretrieved
    _unretrieved = []
    for text, exc in items:
        try:
            _logger.error(
                "forkwait: a future failed and nobody retrieved its exception: %s",
                text, exc_info=(type(exc), exc, exc.__traceback__),
            )
        except BaseException:  # interpreter shutdown: logging may be gone
            pass


cdef void _defer_unretrieved_report(size_t addr, object exc):
    """From a dying future: keep the failure and log it later, at a safe point.

    Formatting a traceback while an object is collected runs arbitrary code
    (linecache, and on CPython 3.11 even ast.parse) in the middle of whatever
    the collecting thread was doing, which broke an ast.parse running there.
    """
    global _report_scheduled
    try:
        _unretrieved.append((
            f"<forkwait.Future at {addr:#x} state=finished raised {type(exc).__name__}>", exc,
        ))
        if not _report_scheduled:
            if Py_AddPendingCall(_report_pending, NULL) == 0:
                _report_scheduled = True
    except BaseException:
        pass


def _unretrieved_pending():
    """(Tests) the failures collected and not yet reported, as (text, exc)."""
    return list(_unretrieved)


def _defer_report_for_tests(exc):
    """(Tests) collect `exc` as a dying future's failure is, without
    scheduling its report (that is _flush_unretrieved's, by hand)."""
    _unretrieved.append(("<forkwait.Future at 0x0 (a test's)>", exc))
