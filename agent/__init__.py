"""The cloudassist agent."""

import os

# Scripts that run as another user are forked (not vfork'ed) from this multi-threaded process;
# gRPC's fork handlers would then restart its pollers in the child before exec, which crashes
# it. The agent never uses gRPC in a forked child, so it turns them off before grpc is loaded.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

__version__ = "0.1.0"
