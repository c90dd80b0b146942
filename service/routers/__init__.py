"""HTTP routers: ``predict`` (scoring) and ``health`` (liveness, readiness, info, metrics)."""
