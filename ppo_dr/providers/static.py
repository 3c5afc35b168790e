"""The static provider: hand out the spare servers a data centre already has.

A spare is *free* when the store places no client on it and no drill or failover
holds a claim on it. Claims are small JSON files, one per spare
(``<claims_dir>/<spare>.claim``), changed only under an exclusive ``flock`` of
``<claims_dir>/.lock``, so two runs on this host can never claim the same spare, and
a rerun of the same request (same ``request.server_id``) finds its claim and gets the
same spare back. The claim directory lives in the ppo-dr state directory, next to the
lab and the SQLite store; runs on several hosts must share it (or run the drill in
one work pool).

There is no router to push: whatever routes clients in such a data centre (a load
balancer, DNS automation) reads the store's placements, which the flow switches with
``Store.move_client``. :meth:`StaticProvider.route` checks that the placement says
what the caller believes and returns a receipt saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ppo_dr.errors import PermanentError, TransientError
from ppo_dr.filelock import exclusive_lock
from ppo_dr.ids import check_id, is_valid_id
from ppo_dr.providers.base import (
    ProviderError,
    ProvisionedServer,
    checked_request,
    placed_on,
    refuse_if_hosting,
)

if TYPE_CHECKING:
    from ppo_dr.failover.plan import ProvisionRequest
    from ppo_dr.inventory import Fleet, Server

LOCK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Claim:
    """Who holds a spare: the request's server id, since when, and which process."""

    spare: str
    request: str
    at: str
    pid: int


class StaticProvider:
    """Spare servers of one data centre, claimed and freed through claim files."""

    name = "static"

    def __init__(self, fleet: Fleet, dc_id: str, *, store_url: str, claims_dir: Path) -> None:
        self.fleet = fleet
        self.dc_id = check_id(dc_id, "data centre id")
        self.store_url = store_url
        self.claims_dir = Path(claims_dir)

    # ---- the protocol

    def provision(self, request: ProvisionRequest) -> ProvisionedServer:
        """Claim a free spare of the DC for ``request.server_id`` (the same one again
        on a rerun). ProviderError when every spare is taken, naming who holds each.

        The spare's fleet entry is returned as it is: ``request.mirrors`` are not
        recorded on it (a drill's scratch server restores; it is not mirrored).
        """
        checked_request(request, self.dc_id, self.name)
        spares = self.spares()
        if not spares:
            raise ProviderError(f"data centre {self.dc_id} has no spare servers with SSH and HTTP")
        with self._locked():
            claims = self.claims()
            for claim in claims.values():
                if claim.request == request.server_id:
                    return self._handed_out(self.fleet.server(claim.spare), claim, created=False)
            busy = {c.spare: f"claimed by {c.request} since {c.at}" for c in claims.values()}
            for spare in spares:
                if spare.id in busy:
                    continue
                clients = placed_on(self.store_url, spare.id)
                if clients:
                    busy[spare.id] = f"hosts {', '.join(clients)}"
                    continue
                claim = Claim(spare.id, request.server_id, _now(), os.getpid())
                self._write_claim(claim)
                return self._handed_out(spare, claim, created=True)
        taken = "; ".join(f"{sid}: {why}" for sid, why in sorted(busy.items()))
        raise ProviderError(f"no free spare server in {self.dc_id} ({taken})")

    def release(self, server_id: str) -> None:
        """Free the spare *server_id* (or the one claimed for request *server_id*).

        Unclaimed is fine (released before). Refused while a client is placed on it.
        """
        wanted = check_id(server_id, "server id")
        with self._locked():
            claim = next(
                (c for c in self.claims().values() if wanted in (c.spare, c.request)), None
            )
            if claim is None:
                return
            refuse_if_hosting(self.store_url, claim.spare)
            (self.claims_dir / f"{claim.spare}.claim").unlink(missing_ok=True)

    def route(self, client_id: str, server_id: str) -> str:
        """Confirm the store places *client_id* on *server_id*; a receipt saying that an
        external router follows the placements (nothing is pushed from here)."""
        from ppo_dr.store import Store

        client = check_id(client_id, "client id")
        server = check_id(server_id, "server id")
        store = Store(self.store_url)
        try:
            placement = store.placement(client)
        finally:
            store.close()
        if placement is None:
            raise PermanentError(f"client {client} has no placement in the store")
        if placement.server_id != server:
            raise PermanentError(
                f"the store places {client} on {placement.server_id}, not {server}: "
                "switch the placement (Store.move_client) before routing"
            )
        return (
            f"static data centre {self.dc_id}: no router to push; the external router reads "
            f"placements from the store, which route {client} -> {server} "
            f"(placement version {placement.version})"
        )

    # ---- claims

    def spares(self) -> list[Server]:
        """The DC's spare servers with SSH and HTTP, in fleet order (the claim order)."""
        return [
            s
            for s in self.fleet.servers_in(self.dc_id)
            if s.role == "spare" and s.http is not None and s.ssh is not None
        ]

    def claims(self) -> dict[str, Claim]:
        """spare id -> its claim, as the claim files say now (unreadable ones are held)."""
        found: dict[str, Claim] = {}
        if not self.claims_dir.is_dir():
            return found
        for path in sorted(self.claims_dir.glob("*.claim")):
            spare = path.name.removesuffix(".claim")
            if not is_valid_id(spare):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                claim = Claim(spare, str(data["request"]), str(data["at"]), int(data["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                # A damaged claim still holds its spare: handing it out twice is worse.
                claim = Claim(spare, "(unreadable claim)", "unknown", 0)
            found[spare] = claim
        return found

    def _handed_out(self, spare: Server, claim: Claim, *, created: bool) -> ProvisionedServer:
        return ProvisionedServer(
            server=spare,
            provider=self.name,
            created=created,
            detail={"spare": spare.id, "request": claim.request, "claimed_at": claim.at},
        )

    def _write_claim(self, claim: Claim) -> None:
        final = self.claims_dir / f"{claim.spare}.claim"
        temp = self.claims_dir / f".{claim.spare}.{os.getpid()}.tmp"
        data = {"request": claim.request, "at": claim.at, "pid": claim.pid}
        temp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        temp.replace(final)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes on this host; bounded so a stuck holder is reported."""
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.claims_dir / ".lock", LOCK_TIMEOUT_S, mode=0o600) as held:
            if not held:
                raise TransientError(f"spare claims in {self.claims_dir} are locked by another run")
            yield


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
