"""Which replica of a service does the service's own work: the holder of a Redis lock.

Replicas of a service (several ``loopwise serve <service>`` processes, Kubernetes pods)
share its stream work through the consumer groups, but some work is the service's, not
a process's: the router's recalibration, the scorer's scheduled selection, the quality
service's recompute. Run twice, it would decide twice (two selection batches sent to
review for one due). So the replicas elect one: the process holding
``loopwise:leader:<service>``, a redis-py :class:`~redis.asyncio.lock.Lock` (``SET NX
PX`` with a random token, extended only by its owner) that lapses ``ttl`` seconds after
its holder stops renewing it (a crash, a partition): another replica takes over within
about ``ttl`` plus one renewal interval. A holder that stops cleanly releases it at once.

A lock in Redis is a lease, not a fence: a holder frozen longer than ``ttl`` (a stopped
VM) may act once more after another took over. What it guards is work decided from
shared state (a due selection, a recalibration window), so an overlap repeats a decision
at worst; nothing it guards is the only protection against a duplicate label.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import LockError, RedisError

from shared.logs import get_logger

log = get_logger(__name__)
LEADER_PREFIX = "loopwise:leader:"
DEFAULT_TTL_SECONDS = 10.0


class Leadership:
    """This process's claim to lead its service; ``held`` says whether it leads now."""

    def __init__(self, redis: Any, service: str, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        self.service = service
        self.ttl = ttl
        self.key = f"{LEADER_PREFIX}{service}"
        # thread_local=False: the token is the process's, whichever task renews it.
        self._lock = redis.lock(self.key, timeout=ttl, blocking=False, thread_local=False)
        self.held = False

    @property
    def renew_every(self) -> float:
        """Renew at a third of the lease, so two missed renewals still keep it."""
        return self.ttl / 3

    async def keep(self) -> None:
        """Take the lock if it is free, extend it if this process holds it; a holder
        that finds it lost (expired and taken) stops leading."""
        was = self.held
        try:
            if self.held:
                await self._lock.reacquire()
            else:
                self.held = bool(await self._lock.acquire())
        except LockError:
            self.held = False
        except RedisError:
            # Redis unreachable: the lease may lapse meanwhile; stop leading until renewed.
            self.held = False
            raise
        finally:
            if self.held != was:
                log.info("leadership " + ("taken" if self.held else "lost"),
                         service=self.service, key=self.key)

    async def release(self) -> None:
        """Give the lock up (a clean stop), so another replica leads at once."""
        if not self.held:
            return
        self.held = False
        try:
            await self._lock.release()
        except (LockError, RedisError):
            pass
