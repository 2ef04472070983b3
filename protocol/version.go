package protocol

// Version is the protocol's major version. Both sides name it in the
// websocket subprotocol ([Subprotocol]) and the agent repeats it in hello.
// A change that an older peer cannot read raises it; adding an optional
// field does not (unknown fields are ignored by both sides).
//
// History:
//   - 1 (2026-11-21): first version. Challenge, hello (signed), welcome,
//     heartbeat, job, accepted, rejected, result, result_ack, cancel,
//     draining, error. Job kinds resolve_credentials, test_connection,
//     list_organizations.
//   - 1 (2026-11-22): optional fields, no version change. ConnectionOutput:
//     organizations_truncated, sso_organization_ids, rate_limit_reset,
//     token_expires_at, warnings; OrganizationsOutput: truncated,
//     sso_organization_ids.
//   - 1 (2026-11-23): optional field, no version change. Hello: probe (a
//     session of `agent doctor` that the control plane closes after
//     welcome).
const Version = 1

// Subprotocol is the websocket subprotocol of [Version].
const Subprotocol = "orchestrator.v1"

// ConnectPath is the control plane's websocket endpoint for agents.
const ConnectPath = "/api/v1/agent/connect"

// EnrollPath is the control plane's HTTP endpoint where an agent trades its
// single-use enrollment token for its agent id.
const EnrollPath = "/api/v1/agent/enroll"
