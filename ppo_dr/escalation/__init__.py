"""The escalation decision: given the policy, what is known of an incident and the time,
which notices are due now and when to look again. Pure: no clock, no I/O, no store.

The escalation flow calls :func:`decide` in a loop (wake, decide, record each notice
under its key, send, sleep until ``next_wake`` or an ack/resolve arrives). Because the
decision depends only on its inputs, a restarted flow decides the same thing again,
and the idempotency keys make sure nothing already recorded is sent twice.

Rules (PagerDuty's escalation and Statuspage's vocabulary):

* **Paging.** An *epoch* starts when the incident opens. Level 1 is paged at once on
  every channel of the level each person has (SMS and e-mail); if nobody acknowledges
  within the level's ``ack_deadline`` the next level is paged, and so on. After the
  last level the whole ladder runs again, ``repeat`` more times, then paging stops
  (public updates go on). An acknowledgement stops paging for the epoch. If the
  incident is acknowledged but not resolved within ``ack_timeout`` (counted from the
  latest acknowledgement), a new epoch starts: level 1 is paged again and a new
  acknowledgement is needed. Recovery (the probe sees service back) stops paging.
  When the flow wakes late, everyone due in the current round is paged (catch-up);
  earlier rounds and epochs are not replayed.
* **Public status** (X): the first post ``public_after`` the opening, then one every
  ``public_every`` while unresolved; a post when the state changes (identified on
  acknowledgement, monitoring on recovery) if posting has begun; and a resolved post
  if anything was posted. Words: investigating → identified → monitoring → resolved.
  At most 280 characters, generic wording only: never a client, person or host name.
  If service recovered before the first post was due, nothing is posted.
* **Client contacts**: one e-mail to each key contact of the affected clients
  ``clients_after`` the opening, if the outage is still on (not recovered, not
  resolved); a resolved e-mail to those who were e-mailed.
* **Resolved**: everyone who was paged gets a resolved notice on each channel they
  were paged on. ``done`` is True once the incident is resolved: the notices
  returned with it are the last.

* **Failover** (server and DC outages, :func:`failover_scope`): the flow starts the
  failover runbook; :func:`failover_notices` tells the on-call what its plan refused,
  that it waits for approval (and how to give it), or that it runs automatically.

The pieces: :mod:`.model` (notice keys, intents, the incident view, the decision),
:mod:`.decision` (:func:`decide` and its rules), :mod:`.failover` (the hand-over to
the failover runbook). Import from here.

Every notice has the key ``incident:<id>/step:<step>/to:<recipient>/via:<channel>``,
made only of the incident id, the step, the recipient and the channel -- never the
time of the decision -- so a retried or restarted flow produces the same keys.
"""

from ppo_dr.escalation.decision import decide, fallback, public_text
from ppo_dr.escalation.failover import (
    FAILOVER_APPROVAL,
    FAILOVER_FINISHED,
    FAILOVER_LEVELS,
    FAILOVER_PLANNED,
    FAILOVER_STARTED,
    FAILOVER_UNAVAILABLE,
    OUTAGE_KIND,
    SMS_LIMIT,
    FailoverView,
    failover_notices,
    failover_scope,
    failover_view,
    on_call,
)
from ppo_dr.escalation.model import (
    PUBLIC,
    PUBLIC_STATES,
    X_LIMIT,
    Decision,
    IncidentView,
    NoticeChannel,
    NoticeIntent,
    NoticeKey,
    contacts_of,
    notice_key,
    parse_key,
)

__all__ = [
    "FAILOVER_APPROVAL",
    "FAILOVER_FINISHED",
    "FAILOVER_LEVELS",
    "FAILOVER_PLANNED",
    "FAILOVER_STARTED",
    "FAILOVER_UNAVAILABLE",
    "OUTAGE_KIND",
    "PUBLIC",
    "PUBLIC_STATES",
    "SMS_LIMIT",
    "X_LIMIT",
    "Decision",
    "FailoverView",
    "IncidentView",
    "NoticeChannel",
    "NoticeIntent",
    "NoticeKey",
    "contacts_of",
    "decide",
    "failover_notices",
    "failover_scope",
    "failover_view",
    "fallback",
    "notice_key",
    "on_call",
    "parse_key",
    "public_text",
]
