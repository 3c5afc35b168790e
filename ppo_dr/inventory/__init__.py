"""The fleet inventory: ``fleet.yaml`` as a typed model, and the rules it must keep.

Loading never stops at the first problem: every item is validated on its own and the
topology rules run over whatever parsed, so an operator fixes a file in one pass.
Each :class:`~ppo_dr.errors.Violation` names the file, the line, the path inside the
file (``servers[app-jhb1-1].ssh.port``) and the rule it breaks.

Secrets never appear in the file, only :class:`SecretRef` references (an environment
variable or a Prefect Secret block name), which the runbooks resolve at send time.

The modules: ``fields`` (value types and their rules), ``model`` (the items and the
fleet, with its look-ups), ``rules`` (the rules between items), ``load`` (reading a
file and reporting every violation with its line).
"""

from ppo_dr.inventory.fields import RelativePath, SecretRef
from ppo_dr.inventory.load import check_fleet_text, load_fleet, parse_fleet
from ppo_dr.inventory.model import (
    Access,
    Capacity,
    Channels,
    Client,
    Contact,
    DataCentre,
    EmailChannel,
    EscalationLevel,
    EscalationPolicy,
    Fleet,
    HttpEndpoint,
    MirrorPolicy,
    Person,
    S3Location,
    Server,
    SmsChannel,
    SshEndpoint,
    StoreConfig,
    Timing,
    Vantage,
    XChannel,
    summary,
)

__all__ = [
    "Access",
    "Capacity",
    "Channels",
    "Client",
    "Contact",
    "DataCentre",
    "EmailChannel",
    "EscalationLevel",
    "EscalationPolicy",
    "Fleet",
    "HttpEndpoint",
    "MirrorPolicy",
    "Person",
    "RelativePath",
    "S3Location",
    "SecretRef",
    "Server",
    "SmsChannel",
    "SshEndpoint",
    "StoreConfig",
    "Timing",
    "Vantage",
    "XChannel",
    "check_fleet_text",
    "load_fleet",
    "parse_fleet",
    "summary",
]
