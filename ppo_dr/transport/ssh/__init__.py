"""SSH/SFTP :class:`~ppo_dr.transport.base.Remote` over paramiko, tuned and fenced.

Why it looks the way it does (figures in PERF-NOTES.md):

- We open the TCP socket ourselves so we can set ``TCP_NODELAY`` before paramiko
  sees it: without it every small SFTP request waits 13-20 ms for delayed ACKs.
- ``aes128-gcm@openssh.com`` is moved to the front of the cipher list: paramiko
  lists GCM last and would otherwise negotiate aes128-ctr + HMAC, which costs a
  second pass over every byte.
- File reads and writes are pipelined on paramiko's request layer, not its file
  objects: its pipelined writes drop their status replies (a full disk went
  unnoticed, file truncated) and its prefetch thread sends requests outside any
  lock. Requests use the sizes OpenSSH announces (255 KiB, not 32 KiB) in whole
  SSH packets; a small file costs three round trips to write, two to read.
- One connection is shared by threads under a lock (paramiko's SFTP client lets
  one thread swallow another's reply); for throughput use a connection per process.
- Host keys are checked against the known_hosts file we are given and nothing else
  (not ``~/.ssh``, no agent, never auto-added), before any credential is offered.
  Unknown or changed keys raise :class:`~ppo_dr.errors.HostKeyError`, which is
  permanent: a possible man-in-the-middle is a page, not a retry.
- Every paramiko/socket/SFTP error is translated in one place
  (:func:`translate_error`), most specific first, into the ppo-dr error tree. A
  transient error also retires the connection, so :class:`SshPool` reconnects.

The modules: ``connection`` (open one connection: host keys, algorithms, auth,
SFTP limits), ``remote`` (:class:`SshRemote`: the operations), ``reader`` and
``writer`` (pipelined file reads, the atomic writer), ``pool`` (:class:`SshPool`),
``translate`` (the error mapping), ``wire`` (path bytes, sizes, reply routing).
"""

from ppo_dr.transport.ssh.pool import SshPool
from ppo_dr.transport.ssh.reader import SshReader
from ppo_dr.transport.ssh.remote import SshRemote
from ppo_dr.transport.ssh.translate import translate_error
from ppo_dr.transport.ssh.writer import SshAtomicWriter

__all__ = ["SshAtomicWriter", "SshPool", "SshReader", "SshRemote", "translate_error"]
