"""Server provisioning and routing per data centre: lab, aws (EC2 + Route53), static.

:func:`provider_for` picks the provider a data centre's ``provider`` field names.
The protocol and the shared rules are in :mod:`ppo_dr.providers.base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppo_dr.ids import check_id
from ppo_dr.providers.base import Provider, ProviderError, ProvisionedServer

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet


def provider_for(
    fleet: Fleet, dc_id: str, *, fleet_file: Path, store_url: str, **options: Any
) -> Provider:
    """The provider of data centre *dc_id*, configured by *options* for its kind.

    lab: the lab in ``fleet_file``'s directory (``start_timeout``, ``route_timeout``),
    which checks placements in its own store (the lab's ``state.db``);
    aws: :class:`~ppo_dr.providers.aws.AwsProvider` keywords (``endpoint_url``,
    ``ssh_check``, ``host_key_source``, timeouts, ...); static: ``claims_dir``
    (default ``<PPO_DR_HOME>/claims/<fleet name>``).
    """
    wanted = check_id(dc_id, "data centre id")
    try:
        dc = fleet.dc(wanted)
    except KeyError:
        raise ProviderError(f"no data centre {wanted!r} in fleet {fleet.name}") from None
    if dc.provider == "lab":
        from ppo_dr.providers.lab import LabProvider

        return LabProvider(dc.id, lab_dir=Path(fleet_file).resolve().parent, **options)
    if dc.provider == "aws":
        from ppo_dr.providers.aws import AwsProvider

        return AwsProvider(fleet, dc.id, store_url=store_url, **options)
    from ppo_dr import config
    from ppo_dr.providers.static import StaticProvider

    claims_dir = options.pop("claims_dir", None) or config.home() / "claims" / fleet.name
    return StaticProvider(fleet, dc.id, store_url=store_url, claims_dir=Path(claims_dir), **options)


def provisionable_dcs(fleet: Fleet) -> frozenset[str]:
    """DCs where a new app server can be provisioned (``FleetState.provisionable``):
    lab and aws; a static DC only lends the spares it has."""
    return frozenset(d.id for d in fleet.data_centres if d.provider in ("lab", "aws"))


__all__ = ["Provider", "ProviderError", "ProvisionedServer", "provider_for", "provisionable_dcs"]
