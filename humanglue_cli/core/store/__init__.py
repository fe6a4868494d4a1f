"""The store: every SQL query of the project, in a module named for the data it owns.

| module | table(s) | what it does |
|---|---|---|
| `events` | `hg_events` | the outbox: enqueue, claim, finish, fail, set aside, retry, backlog |
| `ledger` | `hg_ledger` | once per entity: record keys, prune what can no longer repeat |
| `notifications` | `notifications` | a person's inbox; the worker's inserts, fan-out, retention |
| `people` | `profiles`, `courses`, `course_instructors`, `workshops` | who and what events name |
| `presence` | `student_presence` | presence retention |
| `workers` | `hg_workers` | heartbeats of the running workers |
| `runs` | `hg_maintenance_runs` | the record of maintenance runs |

Functions take a `Connection` in the caller's transaction and are named for their intent
(procrastinate's manager + named queries). Dialect differences stay inside them. The DDL — the
tables and the PostgreSQL/SQLite capture triggers — is in `migrations/`.
"""
