"""`GET /metrics`: the server's counters in the Prometheus text format."""

from .runtime import ServerRuntime


def prometheus_text(runtime: ServerRuntime) -> str:
    """Engine counters (batches, rows, outcomes, queue), requests in flight and HTTP responses by route and status
    (successes and each kind of refusal apart), one `fac_*` metric per line.

    Example:
        >>> print(prometheus_text(runtime).splitlines()[0])  # doctest: +SKIP
        fac_batches_total 12
    """
    stats = runtime.engine.stats
    lines = [
        ("fac_batches_total", stats.batches),
        ("fac_batch_rows_total", stats.rows),
        ("fac_batch_rows_max", stats.largest_batch),
        ("fac_replies_completed_total", stats.completed),
        ("fac_replies_cancelled_total", stats.cancelled),
        ("fac_replies_failed_total", stats.failed),
        ("fac_requests_rejected_total", stats.rejected),
        ("fac_batch_seconds_total", round(stats.batch_seconds, 3)),
        ("fac_queue_depth", runtime.engine.queued),
        ("fac_batch_rows_running", stats.running),
        ("fac_draining", int(runtime.draining)),
        ("fac_requests_in_flight", len(runtime.in_flight)),
    ]
    lines += [
        (f'fac_http_responses_total{{route="{route}",status="{status}"}}', count)
        for (route, status), count in sorted(runtime.responses.items())
    ]
    return "".join(f"{name} {value}\n" for name, value in lines)


__all__ = ["prometheus_text"]
