"""MailOptions: the knobs of a MailStore, fixed when it is opened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024


@dataclass
class MailOptions:
    #: Largest raw message accepted; larger raises MessageTooLarge. Default 25 MiB (a common MTA limit).
    max_message_size: int = 25 * MiB
    #: Change-log entries kept per user; changes() from an older state raises StateTooOld. Default 10,000
    #: (a day of heavy mail; a client offline longer resyncs).
    change_log_retention: int = 10_000
    #: Messages per WriteBatch in import_messages. 64 amortises one fdatasync over ~1.3 MB of average mail.
    import_batch_size: int = 64
    #: Processes sharing an import_messages call, counting the storing one: N >= 2 starts N - 1 worker
    #: processes that parse and analyse ahead (import_pool); 0 or 1: in-process. None (default):
    #: automatic (``import_pool.auto_workers``: one worker per CPU beyond the first, at most 2, for inputs
    #: of at least 2,048 messages while a CPU is idle). Fixed when the store is opened;
    #: ``import_messages(workers=...)`` overrides it per call. Results are identical either way.
    import_workers: int | None = None
    #: fdatasync every write before returning (True) or only hand it to the OS (False: survives a process
    #: crash, not power loss). Default True.
    sync: bool = True
    #: Options passed to lsmmail.DB.open (None: engine defaults).
    db_options: Any = None

