// The official TypeScript MCP SDK client (@modelcontextprotocol/sdk, pinned in package.json),
// driven line by line by tests/server/test_mcp_third_party_clients.py.
//
// Usage: node ts_client.mjs <mcp url> <bearer token>
// stdin: one JSON command per line; stdout: one JSON answer per line, in order.
//   {"op": "list_tools"}                               -> {"tools": [...]} (as the SDK returns them)
//   {"op": "call", "tool", "arguments", "progress"}    -> {"result", "progress"} | {"error"}
//   {"op": "cancel", "tool", "arguments"}              -> cancels the call at its first progress
//                                                         notification, waits for its response
//                                                         stream to end: {"aborted", "stream"}
//   {"op": "wait_list_changed", "seen"}                -> {"count"} once more than `seen` arrived
//   {"op": "errors"}                                   -> {"errors": [...]} the client reported
//   {"op": "gets"}                                     -> {"gets": [...]} GET requests and statuses
// The SDK's own checks stay on: callTool validates structuredContent against the outputSchema
// and rejects a mismatch with -32602, which the test then sees as an error answer.
import readline from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const [url, token] = process.argv.slice(2);
const errors = []; // what the client reports through onerror (e.g. responses to unknown ids)
const posts = new Map(); // JSON-RPC request id -> the raw text of its POST response
const gets = []; // {lastEventId, status} of every GET the transport sent

// Records what went over the wire without changing it: the response body is teed.
async function recordingFetch(input, init = {}) {
  const response = await fetch(input, init);
  const method = (init.method ?? "GET").toUpperCase();
  if (method === "GET") {
    const headers = new Headers(init.headers);
    gets.push({ lastEventId: headers.get("last-event-id"), status: response.status });
    return response;
  }
  let id;
  try {
    id = JSON.parse(init.body).id;
  } catch {
    id = undefined;
  }
  if (method !== "POST" || id === undefined || !response.body) return response;
  const [mine, theirs] = response.body.tee();
  const record = { text: "", contentType: response.headers.get("content-type") };
  record.done = (async () => {
    const reader = mine.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      record.text += value;
    }
  })();
  posts.set(id, record);
  return new Response(theirs, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
  fetch: recordingFetch,
});
const client = new Client({ name: "llmgw-ts-test", version: "1.0.0" });
client.onerror = (error) => errors.push(String(error?.message ?? error));
let listChanged = 0;
let listChangedWaiters = [];
client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
  listChanged += 1;
  for (const wake of listChangedWaiters) wake();
  listChangedWaiters = [];
});

function asError(error) {
  return { code: error?.code ?? null, message: String(error?.message ?? error), data: error?.data };
}

async function call({ tool, arguments: args, progress }) {
  const seen = [];
  const options = progress ? { onprogress: (p) => seen.push(p), timeout: 120000 } : undefined;
  try {
    const result = await client.callTool({ name: tool, arguments: args }, undefined, options);
    return { result, progress: seen };
  } catch (error) {
    return { error: asError(error), progress: seen };
  }
}

async function cancel({ tool, arguments: args }) {
  const controller = new AbortController();
  const before = new Set(posts.keys());
  let aborted = null;
  const pending = client
    .callTool({ name: tool, arguments: args }, undefined, {
      signal: controller.signal,
      onprogress: () => controller.abort("the test cancels at the first progress"),
      timeout: 120000,
    })
    .then(
      () => (aborted = false),
      (error) => (aborted = String(error?.message ?? error)),
    );
  await pending;
  const [id] = [...posts.keys()].filter((key) => !before.has(key));
  const record = posts.get(id);
  await record.done; // the server ends the cancelled request's stream: wait for that end
  return { aborted, stream: record.text, contentType: record.contentType };
}

async function waitListChanged({ seen }) {
  while (listChanged <= seen) {
    await new Promise((wake) => listChangedWaiters.push(wake));
  }
  return { count: listChanged };
}

const handlers = {
  list_tools: async () => ({ tools: (await client.listTools()).tools }),
  call,
  cancel,
  wait_list_changed: waitListChanged,
  errors: async () => ({ errors }),
  gets: async () => ({ gets }),
};

await client.connect(transport);
process.stdout.write(
  JSON.stringify({ ready: true, capabilities: client.getServerCapabilities() }) + "\n",
);
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  let answer;
  try {
    answer = await handlers[command.op](command);
  } catch (error) {
    answer = { failure: asError(error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
await client.close();
