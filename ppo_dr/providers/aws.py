"""The AWS provider: app servers from an EC2 launch template, clients routed by Route53.

Everything goes through boto3 (EC2 and Route53 clients of the DC's ``region``, with
the DC's credential references or boto3's standard chain).

``provision``  finds the instance tagged ``ppo-dr:server=<id>`` (a rerun, ``created``
               False), else ``run_instances`` from the DC's launch template with
               ``ClientToken=<server id>`` (so even a retry of a lost answer launches
               one instance), waits until it is running, learns its SSH host key and
               checks it answers SSH with that key; returns its fleet entry.
``route``      UPSERTs the A record of the client's public hostname (from its URL) to
               the server's address in the DC's hosted zone and waits until INSYNC.
``release``    terminates the server's instance(s) and waits; gone already is fine.

The new instance's SSH host key is read from its console output through the EC2 API
and checked over SSH before anything of ours is offered to it
(:mod:`ppo_dr.providers.aws_host_keys`); boto3 failures become ppo-dr errors in
:mod:`ppo_dr.providers.aws_errors`.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ppo_dr.aws_clients import client_config
from ppo_dr.errors import PermanentError, TransientError
from ppo_dr.ids import check_id
from ppo_dr.providers.aws_errors import aws_call
from ppo_dr.providers.aws_host_keys import (
    HostKeySource,
    SshCheck,
    check_ssh_host_key,
    console_host_key,
)
from ppo_dr.providers.base import (
    ProviderError,
    ProvisionedServer,
    checked_mirrors,
    checked_request,
    refuse_if_hosting,
)

if TYPE_CHECKING:
    from ppo_dr.failover.plan import ProvisionRequest
    from ppo_dr.inventory import DataCentre, Fleet, Server
    from ppo_dr.secret_refs import SecretResolver

SERVER_TAG = "ppo-dr:server"
DC_TAG = "ppo-dr:dc"
FLEET_TAG = "ppo-dr:fleet"
LIVE_STATES = ("pending", "running", "stopping", "stopped")
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 3
WAIT_DELAY_S = 5
RUNNING_TIMEOUT_S = 600.0
BOOT_TIMEOUT_S = 600.0  # console output lags boot by minutes on real EC2
DNS_TIMEOUT_S = 300.0


class AwsProvider:
    """EC2 app servers and Route53 routing for one ``provider: aws`` data centre."""

    name = "aws"

    def __init__(
        self,
        fleet: Fleet,
        dc_id: str,
        *,
        store_url: str,
        endpoint_url: str | None = None,
        secret_resolver: SecretResolver | None = None,
        host_key_source: HostKeySource = console_host_key,
        ssh_check: SshCheck = check_ssh_host_key,
        ssh_user: str = "ppo",
        ssh_port: int = 22,
        http_port: int = 8080,
        data_root: str = "/srv/ppo",
        address: str = "public",
        wait_delay: float = WAIT_DELAY_S,
        running_timeout: float = RUNNING_TIMEOUT_S,
        boot_timeout: float = BOOT_TIMEOUT_S,
        dns_timeout: float = DNS_TIMEOUT_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.fleet = fleet
        wanted = check_id(dc_id, "data centre id")
        dc = next((d for d in fleet.data_centres if d.id == wanted), None)
        if dc is None:
            raise ProviderError(f"no data centre {wanted!r} in fleet {fleet.name}")
        self.dc: DataCentre = dc
        if self.dc.provider != "aws" or not self.dc.region or not self.dc.launch_template:
            raise ProviderError(
                f"data centre {self.dc.id} is not an aws data centre with region and launch "
                "template"
            )
        if address not in ("public", "private"):
            raise ProviderError(f"address must be 'public' or 'private', not {address!r}")
        self.store_url = store_url
        self.endpoint_url = endpoint_url
        self.host_key_source = host_key_source
        self.ssh_check = ssh_check
        self.ssh_user = check_id(ssh_user, "ssh user")
        self.ssh_port = ssh_port
        self.http_port = http_port
        self.data_root = data_root
        self.address = address
        self.wait_delay = max(1.0, wait_delay)
        self.running_timeout = running_timeout
        self.boot_timeout = boot_timeout
        self.dns_timeout = dns_timeout
        self._secret_resolver = secret_resolver
        self._client_args = (connect_timeout, read_timeout, max(1, max_attempts))
        self._clients: dict[str, Any] = {}

    # ---- boto3

    def _client(self, service: str) -> Any:
        """One boto3 client per service, made on first use (credentials resolved then)."""
        if service not in self._clients:
            import boto3

            from ppo_dr.secret_refs import resolve_secret

            connect_timeout, read_timeout, attempts = self._client_args
            keys: dict[str, str] = {}
            if self.dc.access_key_id is not None and self.dc.secret_access_key is not None:
                keys = {
                    "aws_access_key_id": resolve_secret(
                        self.dc.access_key_id, self._secret_resolver
                    ).get_secret_value(),
                    "aws_secret_access_key": resolve_secret(
                        self.dc.secret_access_key, self._secret_resolver
                    ).get_secret_value(),
                }
            config = client_config(self.dc.region, connect_timeout, read_timeout, attempts)
            with aws_call(f"aws {service} client for {self.dc.id}"):
                session = boto3.session.Session(region_name=self.dc.region, **keys)
                self._clients[service] = session.client(
                    service, endpoint_url=self.endpoint_url, config=config
                )
        return self._clients[service]

    def _waiter_config(self, timeout: float) -> dict[str, int]:
        delay = int(self.wait_delay)
        return {"Delay": delay, "MaxAttempts": max(1, int(timeout // delay))}

    # ---- instances

    def instances(
        self, server_id: str, states: tuple[str, ...] = LIVE_STATES
    ) -> list[dict[str, Any]]:
        """The DC's instances tagged as *server_id* in *states*, oldest launch first."""
        ec2 = self._client("ec2")
        found: list[dict[str, Any]] = []
        with aws_call(f"ec2 describe_instances {server_id}"):
            pages = ec2.get_paginator("describe_instances").paginate(
                Filters=[
                    {"Name": f"tag:{SERVER_TAG}", "Values": [server_id]},
                    {"Name": "instance-state-name", "Values": list(states)},
                ]
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    found.extend(reservation.get("Instances", []))
        return sorted(found, key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))

    def provision(self, request: ProvisionRequest) -> ProvisionedServer:
        """Launch (or find again) the instance of ``request.server_id``; its fleet entry
        once it runs and answers SSH with the host key its console output printed."""
        checked_request(request, self.dc.id, self.name)
        if request.mirrors:
            checked_mirrors(self.fleet, self.dc.id, request.server_id, tuple(request.mirrors))
        server_id = request.server_id
        started = time.monotonic()
        live = self.instances(server_id)
        created = not live
        if live:
            instance = live[0]
            if instance["State"]["Name"] in ("stopping", "stopped"):
                raise ProviderError(
                    f"instance {instance['InstanceId']} of {server_id} is "
                    f"{instance['State']['Name']}: start or terminate it (release) first"
                )
        else:
            instance = self._launch(server_id)
        instance_id = instance["InstanceId"]
        instance = self._wait_running(server_id, instance_id)
        host = self._address_of(instance, server_id)
        host_key = self._host_key(instance_id, server_id)
        self._wait_ssh(host, host_key, server_id, instance_id)
        return ProvisionedServer(
            server=self._server_entry(server_id, host, host_key, tuple(request.mirrors)),
            provider=self.name,
            created=created,
            detail={
                "instance_id": instance_id,
                "region": str(self.dc.region),
                "address": host,
                "launch_template": str(self.dc.launch_template),
                "host_key_from": getattr(self.host_key_source, "__name__", "injected source"),
                "seconds": f"{time.monotonic() - started:.1f}",
            },
        )

    def _launch(self, server_id: str) -> dict[str, Any]:
        template = str(self.dc.launch_template)
        spec = {"Version": self.dc.launch_template_version}
        spec["LaunchTemplateId" if template.startswith("lt-") else "LaunchTemplateName"] = template
        # ClientToken makes a retried call (answer lost) launch nothing new. After a
        # release the same server id needs a new token: AWS would answer with the
        # terminated instance for the old one.
        gone = len(self.instances(server_id, ("shutting-down", "terminated")))
        token = server_id if gone == 0 else f"{server_id}.{gone}"[-64:]
        tags = [
            {"Key": "Name", "Value": server_id},
            {"Key": SERVER_TAG, "Value": server_id},
            {"Key": DC_TAG, "Value": self.dc.id},
            {"Key": FLEET_TAG, "Value": self.fleet.name},
        ]
        with aws_call(f"ec2 run_instances {server_id} from {template}"):
            answer = self._client("ec2").run_instances(
                LaunchTemplate=spec,
                MinCount=1,
                MaxCount=1,
                ClientToken=token,
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": tags},
                    {"ResourceType": "volume", "Tags": tags},
                ],
            )
        instances: list[dict[str, Any]] = answer.get("Instances", [])
        if len(instances) != 1:
            raise PermanentError(
                f"ec2 run_instances {server_id}: expected one instance, got {len(instances)}"
            )
        return instances[0]

    def _wait_running(self, server_id: str, instance_id: str) -> dict[str, Any]:
        ec2 = self._client("ec2")
        with aws_call(f"wait for instance {instance_id} of {server_id} to run"):
            ec2.get_waiter("instance_running").wait(
                InstanceIds=[instance_id], WaiterConfig=self._waiter_config(self.running_timeout)
            )
            answer = ec2.describe_instances(InstanceIds=[instance_id])
        return dict(answer["Reservations"][0]["Instances"][0])

    def _address_of(self, instance: dict[str, Any], server_id: str) -> str:
        key = "PublicIpAddress" if self.address == "public" else "PrivateIpAddress"
        value = instance.get(key)
        if not value:
            raise ProviderError(
                f"instance {instance['InstanceId']} of {server_id} has no {key}: the launch "
                f"template must give it one (or use address='private' from inside the VPC)"
            )
        return str(ipaddress.ip_address(value))

    def _host_key(self, instance_id: str, server_id: str) -> str:
        deadline = time.monotonic() + self.boot_timeout
        while True:
            key = self.host_key_source(self._client("ec2"), instance_id)
            if key:
                return key
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"instance {instance_id} of {server_id} has not printed its SSH host keys "
                    f"to its console after {self.boot_timeout:g} s (still booting, or the "
                    "image does not run cloud-init); release it or try again"
                )
            time.sleep(self.wait_delay)

    def _wait_ssh(self, host: str, host_key: str, server_id: str, instance_id: str) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while True:
            try:
                self.ssh_check(host, self.ssh_port, host_key)
                return
            except TransientError as exc:
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"instance {instance_id} of {server_id} does not answer SSH after "
                        f"{self.boot_timeout:g} s: {exc}"
                    ) from exc
            time.sleep(self.wait_delay)

    def _server_entry(
        self, server_id: str, host: str, host_key: str, mirrors: tuple[str, ...]
    ) -> Server:
        from pydantic import ValidationError

        from ppo_dr.inventory import Server

        try:
            return Server.model_validate(
                {
                    "id": server_id,
                    "dc": self.dc.id,
                    "role": "app",
                    "ssh": {
                        "host": host,
                        "port": self.ssh_port,
                        "user": self.ssh_user,
                        "host_key": host_key,
                    },
                    "http": {"host": host, "port": self.http_port},
                    "data_root": self.data_root,
                    "mirrors": list(mirrors),
                }
            )
        except ValidationError as exc:
            raise PermanentError(
                f"fleet entry of new server {server_id} is invalid: {exc}"
            ) from exc

    def release(self, server_id: str) -> None:
        """Terminate the instance(s) of *server_id* and wait; none left is fine.

        Refused while the store places a client on it.
        """
        sid = check_id(server_id, "server id")
        refuse_if_hosting(self.store_url, sid)
        ids = [i["InstanceId"] for i in self.instances(sid)]
        if not ids:
            return
        ec2 = self._client("ec2")
        with aws_call(f"ec2 terminate_instances {sid}"):
            ec2.terminate_instances(InstanceIds=ids)
            ec2.get_waiter("instance_terminated").wait(
                InstanceIds=ids, WaiterConfig=self._waiter_config(self.running_timeout)
            )

    # ---- routing

    def route(self, client_id: str, server_id: str) -> str:
        """UPSERT the client's public hostname to the server's address; wait for INSYNC."""
        wanted = check_id(client_id, "client id")
        sid = check_id(server_id, "server id")
        client = next((c for c in self.fleet.clients if c.id == wanted), None)
        if client is None:
            raise PermanentError(f"no client {wanted!r} in fleet {self.fleet.name}")
        zone = self.dc.hosted_zone_id
        if zone is None:
            raise ProviderError(
                f"data centre {self.dc.id} names no hosted_zone_id: Route53 routing is off "
                "there; the placement in the store is all a router can follow"
            )
        hostname = urlsplit(client.url).hostname
        if not hostname:
            raise PermanentError(f"client {client.id} has no hostname in its URL")
        record_type, value = self._route_target(sid)
        ttl = self.dc.dns_ttl
        r53 = self._client("route53")
        what = f"route53 UPSERT {hostname} {record_type} {value} in {zone}"
        with aws_call(what):
            # A name holds a CNAME or addresses, never both: a record of the other kind
            # is deleted in the same (atomic) batch, so the name never goes unanswered.
            changes: list[dict[str, Any]] = [
                {"Action": "DELETE", "ResourceRecordSet": old}
                for old in self._records_named(zone, hostname)
                if old["Type"] != record_type
            ]
            changes.append(
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": hostname,
                        "Type": record_type,
                        "TTL": ttl,
                        "ResourceRecords": [{"Value": value}],
                    },
                }
            )
            answer = r53.change_resource_record_sets(
                HostedZoneId=zone,
                ChangeBatch={"Comment": f"ppo-dr: route {client.id} to {sid}", "Changes": changes},
            )
            change_id = str(answer["ChangeInfo"]["Id"])
            r53.get_waiter("resource_record_sets_changed").wait(
                Id=change_id, WaiterConfig=self._waiter_config(self.dns_timeout)
            )
        return (
            f"route53 zone {zone}: {hostname} {record_type} {value} (TTL {ttl} s) -> {sid}; "
            f"change {change_id.rsplit('/', 1)[-1]} INSYNC"
        )

    def _records_named(self, zone: str, hostname: str) -> list[dict[str, Any]]:
        """The A, AAAA and CNAME record sets of *hostname* in *zone* now."""
        answer = self._client("route53").list_resource_record_sets(
            HostedZoneId=zone, StartRecordName=hostname, MaxItems="10"
        )
        wanted = hostname.rstrip(".").lower()
        return [
            r
            for r in answer.get("ResourceRecordSets", [])
            if r["Name"].rstrip(".").lower() == wanted and r["Type"] in ("A", "AAAA", "CNAME")
        ]

    def _route_target(self, server_id: str) -> tuple[str, str]:
        """(record type, value): a fleet server's HTTP host, else the instance's address."""
        server = next((s for s in self.fleet.servers if s.id == server_id), None)
        if server is not None and server.http is not None:
            host = server.http.host.strip("[]")
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return "CNAME", host
            return ("AAAA" if address.version == 6 else "A"), str(address)
        running = self.instances(server_id, ("running",))
        if running:
            return "A", self._address_of(running[0], server_id)
        raise PermanentError(
            f"server {server_id} is neither a fleet server with HTTP nor a running instance "
            f"of {self.dc.id}"
        )
