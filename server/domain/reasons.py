"""The original product's error codes, used as `google.rpc.ErrorInfo.reason` and record error codes.

Request errors keep the product's spelling so that clients written against it keep working.
"""

# The codes agents report (TaskError.error_code) live where the agent can reach them too.
from cloudassist.common.task_errors import ACCOUNT_NOT_EXISTS as ACCOUNT_NOT_EXISTS
from cloudassist.common.task_errors import CLIENT_RESTARTED as CLIENT_RESTARTED
from cloudassist.common.task_errors import COMMAND_NOT_APPLICABLE as COMMAND_NOT_APPLICABLE
from cloudassist.common.task_errors import DIRECTORY_NOT_ABSOLUTE as DIRECTORY_NOT_ABSOLUTE
from cloudassist.common.task_errors import DIRECTORY_NOT_ACCESSIBLE as DIRECTORY_NOT_ACCESSIBLE
from cloudassist.common.task_errors import DIRECTORY_NOT_EXISTS as DIRECTORY_NOT_EXISTS
from cloudassist.common.task_errors import EXECUTION_EXCEPTION as EXECUTION_EXCEPTION
from cloudassist.common.task_errors import FILE_ALREADY_EXISTS as FILE_ALREADY_EXISTS
from cloudassist.common.task_errors import INSTANCE_MISMATCH as INSTANCE_MISMATCH
from cloudassist.common.task_errors import LAUNCHER_NOT_FOUND as LAUNCHER_NOT_FOUND

# Request validation.
MISSING_REGION_ID = "MissingParameter.RegionId"
INVALID_REGION_ID = "InvalidRegionId.Malformed"
MISSING_NAME = "MissingParameter.Name"
CMD_NAME_EXCEED_LIMIT = "CmdName.ExceedLimit"
CMD_NAME_INVALID_CHARACTER = "InvalidParameterCharacter.CommandName"
CMD_DESC_EXCEED_LIMIT = "CmdDesc.ExceedLimit"
CMD_DESC_INVALID_CHARACTER = "InvalidParameterCharacter.CommandDescription"
MISSING_COMMAND_TYPE = "MissingParameter.Type"
INVALID_COMMAND_TYPE = "InvalidCmdType.NotFound"
MISSING_COMMAND_CONTENT = "MissingParameter.CommandContent"
CMD_CONTENT_EXCEED_LIMIT = "CmdContent.ExceedLimit"
INVALID_WORKING_DIR = "InvalidParameter.WorkingDir"
INVALID_TIMEOUT = "InvalidTimeout.ExceedLimit"
USERNAME_EXCEED_LIMIT = "Username.ExceedLimit"
INVALID_USERNAME = "InvalidParameter.Username"
MISSING_COMMAND_ID = "MissingParameter.CommandId"
MISSING_INVOKE_ID = "MissingParameter.InvokeId"
MISSING_INSTANCE_IDS = "MissingParameter.InstanceIds"
INVALID_INSTANCE_IDS = "InvalidParameter.InstanceIds"
INSTANCE_IDS_EXCEED_LIMIT = "InstanceIds.ExceedLimit"
INVALID_CLIENT_TOKEN = "InvalidClientToken.Malformed"
INVALID_PAGE_SIZE = "InvalidParam.PageSize"
INVALID_PAGE_TOKEN = "InvalidParameter.PageToken"
INVALID_OUTPUT_RANGE = "InvalidParameter.OutputRange"
INVALID_FILTER = "InvalidParameter.Filter"
MALFORMED_REQUEST = "InvalidParameter.Malformed"
INVALID_TIMESTAMP = "InvalidParameter.Timestamp"
INVALID_CHARACTER = "InvalidParameter.NulCharacter"

# Custom parameters.
PARAMETER_EMPTY_KEY = "CmdParam.EmptyKey"
PARAMETER_INVALID_NAME = "CmdParam.InvalidParamName"
CMD_PARAM_COUNT_EXCEED_LIMIT = "CmdParamCount.ExceedLimit"
CMD_PARAM_NAME_EXCEED_LIMIT = "CmdParamName.ExceedLimit"
PARAMETER_COUNT_EXCEED_LIMIT = "ParameterCount.ExceedLimit"
PARAMETER_MISSING_VALUE = "Parameter.MissingValue"
PARAMETER_NOT_MATCHED = "Parameter.NotMatched"
PARAMETERS_DISABLED = "Parameter.Disabled"

# SendFile.
FILE_NAME_INVALID = "InvalidParameter.FileName"
FILE_DIR_INVALID = "InvalidParameter.TargetDir"
FILE_CONTENT_INVALID = "InvalidParameter.Content"
FILE_CONTENT_EXCEED_LIMIT = "Content.ExceedLimit"
FILE_MODE_INVALID = "InvalidParameter.FileMode"
FILE_ACCOUNT_INVALID = "InvalidParameter.FileOwner"

# Rate control.
INVALID_MAX_CONCURRENCY = "InvalidParameter.MaxConcurrency"
INVALID_MAX_ERRORS = "InvalidParameter.MaxErrors"
MAX_ERRORS_EXCEEDED = "MaxErrorsExceeded"

# How a script is run.
INVALID_LAUNCHER = "InvalidParameter.Launcher"

# Tags.
TAG_KEY_MALFORMED = "InvalidTagKey.Malformed"
TAG_VALUE_MALFORMED = "InvalidTagValue.Malformed"
TAGS_EXCEED_LIMIT = "Tags.ExceedLimit"
TARGETS_CONFLICT = "InvalidParameter.ResourceTags"
NO_INSTANCE_MATCHED = "InvalidResourceTags.NoInstance"

# Environment variables of an invocation.
ENV_INVALID_NAME = "InvalidParameter.EnvName"
ENV_RESERVED_NAME = "InvalidParameter.EnvNameReserved"
ENV_EXCEED_LIMIT = "Env.ExceedLimit"

# Schedules.
MISSING_FREQUENCY = "MissingParam.Frequency"
INVALID_FREQUENCY = "InvalidParam.Frequency"
INVALID_REPEAT_MODE = "InvalidRepeatMode.NotFound"
INVALID_PREVIEW_COUNT = "InvalidParam.Count"

# Lookups.
COMMAND_NOT_FOUND = "InvalidCmdId.NotFound"
INVOCATION_NOT_FOUND = "InvalidInvokeId.NotFound"
INSTANCE_NOT_FOUND = "InvalidInstance.NotFound"
INSTANCE_NOT_IN_INVOCATION = "InvalidInstanceId.NotFound"
RECORD_NOT_FOUND = "InvalidRecordId.NotFound"

# State and quotas.
INSTANCE_NOT_MATCH = "InvalidInstance.NotMatch"
CLIENT_NOT_ONLINE = "ClientNotOnline"
INVOCATION_NOT_RUNNING = "InvalidStatus.Invocation"
NOT_PERIODIC = "InvalidRepeatMode.NotPeriod"
NOTHING_TO_MODIFY = "MissingParameter.Modification"
INVALID_PARAMETERS_CHANGE = "InvalidParameter.ReplaceParameters"
CMD_COUNT_EXCEED_QUOTA = "CmdCount.ExceedQuota"
INVOCATION_EXCEED_QUOTA = "Invocation.ExceedQuota"
IDEMPOTENT_PARAMETER_MISMATCH = "IdempotentParameterMismatch"
# RerunInvocation.
INVALID_RERUN_STATES = "InvalidParameter.States"
INVOCATION_NOT_ENDED = "InvalidStatus.InvocationRunning"
NO_FAILED_INSTANCE = "InvalidStatus.NoFailedInstance"
INSTANCE_NOT_FAILED = "InvalidInstanceId.NotFailed"

# Record error codes (InvocationResult.error_code).
EXIT_CODE_NONZERO = "ExitCodeNonzero"
EXECUTION_TIMEOUT = "ExecutionTimeout"
DELIVERY_TIMEOUT = "DeliveryTimeout"
TERMINATION_EXCEPTION = "TerminationException"
INSTANCE_DEREGISTERED = "InstanceDeregistered"

# Error codes an agent reports that make a record INVALID rather than ERROR.
INVALID_ON_INSTANCE = frozenset(
    {
        DIRECTORY_NOT_EXISTS,
        DIRECTORY_NOT_ABSOLUTE,
        DIRECTORY_NOT_ACCESSIBLE,
        ACCOUNT_NOT_EXISTS,
        COMMAND_NOT_APPLICABLE,
        LAUNCHER_NOT_FOUND,
        FILE_ALREADY_EXISTS,
    }
)

# Authentication and authorisation.
MISSING_API_KEY = "MissingParameter.Authorization"
INVALID_API_KEY = "InvalidApiKey"
NOT_ADMIN = "Forbidden.NotAdmin"
THROTTLED = "Throttling.User"
# An agent's hello beyond what the server admits now (the status says when to come back).
AGENTS_THROTTLED = "Throttling.AgentConnect"
INVALID_ACTIVATION = "InvalidActivation"
ACTIVATION_EXPIRED = "Activation.Expired"
ACTIVATION_EXHAUSTED = "Activation.ExceedLimit"
INVALID_INSTANCE_CREDENTIALS = "InvalidInstanceCredentials"
INSTANCE_ID_TAKEN = "InvalidInstanceId.Duplicate"
ACCOUNT_NOT_FOUND = "InvalidAccountId.NotFound"
ACCOUNT_NAME_TAKEN = "InvalidAccountName.Duplicate"
INVALID_ACCOUNT_NAME = "InvalidAccountName.Malformed"
KEY_NOT_FOUND = "InvalidKeyId.NotFound"
INVALID_EXPIRATION = "InvalidParameter.ExpirationTime"
INVALID_MAX_REGISTRATIONS = "InvalidParameter.MaxRegistrations"
