// Package protocol is the contract between the agent and the control plane:
// the websocket messages of protocol v1, the job kinds with their params and
// results, the closed list of error codes, and the enrollment and error
// shapes of the HTTP API that both sides speak.
//
// It imports only the standard library. The agent and the control plane
// never import each other; they meet here.
//
// Wire format: one JSON object per websocket text frame. Every message is a
// [Message] envelope whose Type names exactly one body field. Decoding is a
// single pass into typed structs, bounded by [MaxFrameSize] and [MaxDepth],
// and [Message.Validate] checks every field that came from the network.
package protocol
