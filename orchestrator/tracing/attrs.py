"""Attribute names: GenAI semantic conventions (v1.41.1) plus our own `orchestrator.*` namespace."""

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
MAX_TOKENS = "gen_ai.request.max_tokens"
TEMPERATURE = "gen_ai.request.temperature"
STREAM = "gen_ai.request.stream"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
TTFC = "gen_ai.response.time_to_first_chunk"
AGENT_NAME = "gen_ai.agent.name"
WORKFLOW_NAME = "gen_ai.workflow.name"
CONVERSATION_ID = "gen_ai.conversation.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_ARGS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
TOOL_ISOLATED = "orch.tool.isolated"  # ran in a killable child process
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"

NS = "orchestrator."
KIND = NS + "span_kind"  # run | node | chat | tool
RUN_ID = NS + "run_id"
NODE = NS + "node"
NODE_PATH = NS + "node_path"  # a nested node's path: a JSON list of node names, outermost first
ROLE = NS + "role"
SLOT = NS + "slot"
ACTION = NS + "action"
COST = NS + "cost_usd"
TTFT_MS = NS + "ttft_ms"
TOKENS_PER_S = NS + "tokens_per_s"
COMPUTE_MS = NS + "compute_ms"
QUEUE_MS = NS + "queue_ms"
STATUS = NS + "status"
DOWNGRADED = NS + "downgraded"  # features the endpoint refused, and the rung taken instead (JSON)
STRUCTURED_OUTPUT = NS + "structured_output"  # the rung structured output took: json_schema, tool, ...
DECISION_STRATEGY = NS + "decision.strategy"  # how the controller asked: tool_calls or json_schema
STOP_REASON = NS + "stop_reason"  # why a run stopped early (budget, step limit, deadline)
CANCELLED = NS + "cancelled"
TOOL_APPROVAL = NS + "tool.approval"  # a confirmed tool's call: approved or declined by a person
INTERRUPTED = NS + "interrupted"  # the node stopped to wait for a person (a LangGraph interrupt)
VERSION = NS + "version"
CONFIG_HASH = NS + "config_hash"
MODEL_SHA256 = NS + "model_sha256."  # + model name
LLAMA_CPP_VERSION = NS + "llama_cpp_version"
REPAIRS = NS + "repairs"
CACHE_WRITE_1H = NS + "cache_creation_1h.input_tokens"  # the 1-hour part of the cache writes
USAGE_ESTIMATED = NS + "usage_estimated"  # some tokens were estimated (a stream broke before its usage)
ATTEMPTS = NS + "attempts"
RETRY_WAIT_MS = NS + "retry_wait_ms"
WORKER_INPUT = NS + "worker.input"  # recorded with content capture only
WORKER_REPAIRS = NS + "worker.repairs"  # repairs a worker's output needed on its own slot
WORKER_ESCALATIONS = NS + "worker.escalations"  # slots up its chain a worker's task went
WORKER_MARGIN = NS + "worker.margin"  # the model's confidence margin, where a worker routes by it
WORKER_ROUTE = (
    NS + "worker.route"
)  # routing by confidence: "kept" on the worker's slot, "escalated", or "sent up" before it answered
WORKER_P_RIGHT = (
    NS + "worker.p_right"
)  # routing before generation: the router's estimate that the workhorse is right
WORKER_OUTPUT = NS + "worker.output"  # recorded with content capture only
PLAN = NS + "plan"  # the controller's sub-tasks, as JSON (content capture only: it quotes the request)
PLAN_PARTS = NS + "plan.parts"  # the kinds of the plan's parts: "tool" or "worker:<name>"
UNGROUNDED = NS + "ungrounded"  # problems a grounding check found, before its repair (content capture only)
UNGROUNDED_COUNT = NS + "ungrounded.count"  # how many problems that check found
HELD_PARTS = NS + "decision.held_parts"  # parallel calls held back: they need a result not yet observed
DECIDED_BY = NS + "decided_by"  # "model", or "plan" for a step the plan fixed without a model call
ANSWER_FALLBACK = NS + "answer_fallback"  # the model's answer failed its check twice; built from observations
GRAMMAR_FALLBACKS = NS + "grammar_fallbacks"  # local decoding: preferred tokens the grammar refused

# LangChain run tags that tell the graph tracer (tracing/callbacks.py) a call is traced already
TRACED = "orch:traced"  # a model call made by the orchestrator's own path (models/calls.py)
# a tool run in process by a runner: its caller (the agent's call_tool node) gives it a span and a ledger
# entry
RUNNER_TAG = "orch:tool-runner"
