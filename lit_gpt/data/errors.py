"""The exception for bad data input.

Why: a user's mistake (a missing field, a corrupt shard, a YAML naming absent data) must read differently
from a bug. Every `DataError` message is one line naming the file and what to do, and the preprocessing
CLI prints exactly that line and exits non-zero.
"""

from lit_gpt.core.errors import UserError


class DataError(UserError, ValueError):
    """Input documents, shards or mixture files are unusable; the message names the file and the fix."""
