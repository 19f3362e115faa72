"""The error codes an agent reports when it cannot run a task (TaskError.error_code): the agent
raises them and the server's reasons name them, from this one place."""

from __future__ import annotations

DIRECTORY_NOT_EXISTS = "DirectoryNotExists"
# A working directory that is not absolute (stored before the rule, or from an older server).
DIRECTORY_NOT_ABSOLUTE = "DirectoryNotAbsolute"
# A working directory the user the script runs as cannot enter.
DIRECTORY_NOT_ACCESSIBLE = "DirectoryNotAccessible"
ACCOUNT_NOT_EXISTS = "AccountNotExists"
COMMAND_NOT_APPLICABLE = "CommandNotApplicable"
LAUNCHER_NOT_FOUND = "LauncherNotFound"
FILE_ALREADY_EXISTS = "FileAlreadyExists"
EXECUTION_EXCEPTION = "ExecutionException"
CLIENT_RESTARTED = "ClientRestarted"
# A task addressed to another instance: refused before anything is written.
INSTANCE_MISMATCH = "InstanceMismatch"
