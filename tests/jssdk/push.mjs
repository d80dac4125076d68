// The push notifications "done when" scenario, as a new user of a fresh Myelin would live it with the real
// matrix-js-sdk: two users register, alice's sdk client syncs, sees notification and highlight counts rise and
// fall with her read receipt, registers an HTTP pusher, and a push gateway receives the DM bob sends her.
//
//   node push.mjs <baseURL> <gatewayURL> <gatewayLogURL>
//
// baseURL: the homeserver (http://127.0.0.1:8008). gatewayURL: the notify URL given to the pusher as data.url
// (http://127.0.0.1:<port>/_matrix/push/v1/notify). gatewayLogURL: a URL answering GET with
// {"notifications": [<notification object of each notify request the gateway accepted>], "attempts": N}.
// tests/jssdk_test.go serves both from internal/testutil's fake push gateway and runs this script.
//
// Every wait is bounded; the first failure prints what was expected and what was seen, then the script exits 1.

// matrix-js-sdk targets Node 22; Node 20 lacks Promise.withResolvers. Polyfill it before the sdk loads (hence the
// dynamic import below).
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
const sdk = await import("matrix-js-sdk");
const { ClientEvent, NotificationCountType } = sdk;
// The sdk's own loggers (MatrixRTC sessions and others not tied to our client) print to the console at debug
// level; send them to the failure report instead.
const { logger: sdkRootLogger } = await import("matrix-js-sdk/lib/logger.js");

const [baseURL, gatewayURL, gatewayLogURL] = process.argv.slice(2);
if (!baseURL || !gatewayURL || !gatewayLogURL) {
  console.error("usage: node push.mjs <baseURL> <gatewayURL> <gatewayLogURL>");
  process.exit(2);
}

const STEP_TIMEOUT_MS = 15_000; // any single wait
const TOTAL_TIMEOUT_MS = 50_000; // the whole scenario
const REQUEST_TIMEOUT_MS = 10_000; // one plain HTTP request
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;

// ---- what the sdk did, for failure reports ----------------------------------------------------------------------

const sdkRequests = []; // the last requests the sdk made: "GET /pushrules/ → 404 M_UNRECOGNIZED (3 ms)"
const sdkFailures = new Map(); // "GET /_matrix/client/v3/pushrules/ → 404 M_UNRECOGNIZED" → count
const sdkLog = []; // the sdk's last log lines (every level)
const syncStates = []; // the sdk's sync states, in order (duplicates collapsed)
const syncResponses = []; // {at, body} of every /sync response the sdk received (the server's own view)
let lastSyncError = null;

function remember(list, item, max) {
  list.push(item);
  if (list.length > max) list.shift();
}

function shortPath(url) {
  return url.pathname.replace(/^\/_matrix\/client\/(v3|v1|r0|unstable)/, "");
}

// loggingFetch is the sdk's fetch: it records every request, the failures, and the parsed body of each /sync.
async function loggingFetch(input, init = {}) {
  const url = new URL(typeof input === "string" ? input : input.url ?? String(input));
  const method = (init.method ?? input.method ?? "GET").toUpperCase();
  const t0 = Date.now();
  let res;
  try {
    res = await fetch(input, init);
  } catch (err) {
    remember(sdkRequests, `${method} ${shortPath(url)} → ${err.name}: ${err.message}`, 40);
    throw err;
  }
  let note = "";
  if (!res.ok) {
    let errcode = "";
    try {
      errcode = JSON.parse(await res.clone().text()).errcode ?? "";
    } catch {}
    const key = `${method} ${url.pathname} → ${res.status} ${errcode}`.trim();
    sdkFailures.set(key, (sdkFailures.get(key) ?? 0) + 1);
    note = ` ${errcode}`;
  } else if (url.pathname.endsWith("/sync")) {
    try {
      syncResponses.push({ at: Date.now(), body: await res.clone().json() });
    } catch {}
  }
  remember(sdkRequests, `${method} ${shortPath(url)}${url.search.length > 80 ? "?…" : url.search} → ${res.status}${note} (${Date.now() - t0} ms)`, 40);
  return res;
}

function makeLogger(prefix = "") {
  const line = (level) => (...args) =>
    remember(sdkLog, `${elapsed()} ${level} ${prefix}${args.map(logArg).join(" ")}`, 60);
  return {
    trace: line("trace"),
    debug: line("debug"),
    info: line("info"),
    warn: line("warn"),
    error: line("error"),
    getChild: (ns) => makeLogger(`${prefix}${ns} `),
  };
}

sdkRootLogger.methodFactory = (level, _n, name) => (...args) => remember(sdkLog, `${elapsed()} ${level} [${name}] ${args.map(logArg).join(" ")}`, 60);
sdkRootLogger.rebuild();

function logArg(a) {
  return a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "string" ? a : safeJSON(a);
}

function safeJSON(v) {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 300 ? s.slice(0, 300) + "…" : s;
  } catch {
    return String(v);
  }
}

// ---- steps, waits and reports -----------------------------------------------------------------------------------

let client = null;
const rooms = {}; // name → room ID, for the report

function report() {
  const out = [];
  out.push(`  sdk sync states: ${syncStates.join(" → ") || "(none)"}` + (lastSyncError ? `; last sync error: ${lastSyncError}` : ""));
  if (sdkFailures.size) {
    out.push("  sdk requests that failed:");
    for (const [k, n] of sdkFailures) out.push(`    ${k}  ×${n}`);
  }
  if ([...sdkFailures.keys()].some((k) => k.startsWith("GET /_matrix/client/v3/pushrules/ "))) {
    out.push("  → matrix-js-sdk fetches GET /pushrules/ before its first /sync and retries it forever while it fails");
  }
  for (const [name, roomId] of Object.entries(rooms)) {
    const room = client?.getRoom(roomId);
    const server = lastServerCounts(roomId);
    out.push(`  room ${name} ${roomId}: alice's membership ${room?.getMyMembership() ?? "(room unknown to the sdk)"}, ` +
      `sdk counts total=${room?.getUnreadNotificationCount(NotificationCountType.Total)} highlight=${room?.getUnreadNotificationCount(NotificationCountType.Highlight)}, ` +
      `last unread_notifications from /sync: ${server ? safeJSON(server) : "(never sent)"}`);
  }
  out.push("  last sdk requests:");
  for (const r of sdkRequests.slice(-15)) out.push(`    ${r}`);
  const noisy = sdkLog.filter((l) => / (warn|error) /.test(l)).slice(-15);
  if (noisy.length) {
    out.push("  last sdk warnings and errors:");
    for (const l of noisy) out.push(`    ${l}`);
  }
  return out.join("\n");
}

async function finish(code) {
  try {
    client?.stopClient();
  } catch {}
  console.log(code === 0 ? `PASS push scenario (${elapsed()})` : `FAIL push scenario (${elapsed()})`);
  process.exit(code);
}

const watchdog = setTimeout(() => {
  console.log(`FAIL the scenario did not finish within ${TOTAL_TIMEOUT_MS / 1000}s (stuck in step "${currentStep}")\n${report()}`);
  finish(1);
}, TOTAL_TIMEOUT_MS);
watchdog.unref();

let currentStep = "";
async function step(name, fn) {
  currentStep = name;
  const t0 = Date.now();
  try {
    const result = await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    return result;
  } catch (err) {
    console.log(`FAIL ${name} (after ${Date.now() - t0} ms, at ${elapsed()})\n  ${err.message.replace(/\n/g, "\n  ")}\n${report()}`);
    await finish(1);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// waitFor polls cond (sync or async) until it returns a truthy value, for at most timeoutMs; on timeout it throws
// "expected <what>; saw <seen()>".
async function waitFor(what, seen, cond, timeoutMs = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`expected ${what} within ${timeoutMs} ms; saw ${seen()}`);
    await sleep(50);
  }
}

function check(cond, expected, saw) {
  if (!cond) throw new Error(`expected ${expected}; saw ${saw}`);
}

// ---- plain HTTP (bob, registration, the gateway's log) ----------------------------------------------------------

async function http(method, url, token, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    throw new Error(`${method} ${url}: ${err.name}: ${err.message}`);
  }
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {}
  if (!res.ok) throw new Error(`${method} ${url}: expected a 2xx answer; saw HTTP ${res.status} ${text.slice(0, 500)}`);
  return json;
}

const api = (token, method, path, body) => http(method, `${baseURL}/_matrix/client/v3${path}`, token, body);
const enc = encodeURIComponent;
let txn = 0;
const send = (token, roomId, content) => api(token, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/jssdk-${Date.now()}-${++txn}`, content);

function lastServerCounts(roomId) {
  for (let i = syncResponses.length - 1; i >= 0; i--) {
    const r = syncResponses[i].body?.rooms?.join?.[roomId];
    if (r?.unread_notifications) return r.unread_notifications;
  }
  return null;
}

function counts(roomId) {
  const room = client.getRoom(roomId);
  return {
    total: room?.getUnreadNotificationCount(NotificationCountType.Total) ?? 0,
    highlight: room?.getUnreadNotificationCount(NotificationCountType.Highlight) ?? 0,
  };
}

const countsSeen = (roomId) => () => `sdk counts ${safeJSON(counts(roomId))}, last unread_notifications from /sync: ${safeJSON(lastServerCounts(roomId))}`;

// ---- the scenario -----------------------------------------------------------------------------------------------

console.log(`push scenario against ${baseURL} with matrix-js-sdk ${(await import("matrix-js-sdk/package.json", { with: { type: "json" } }).catch(() => ({ default: {} }))).default.version ?? "?"} on Node ${process.versions.node}`);

const password = "correct horse battery staple";
const register = (username) =>
  step(`register ${username} (m.login.dummy)`, async () => {
    const r = await api(null, "POST", "/register", { username, password, auth: { type: "m.login.dummy" }, initial_device_display_name: `${username}'s script` });
    check(r?.user_id && r?.access_token, "a user_id and an access_token", safeJSON(r));
    return r;
  });
const alice = await register("alice");
const bob = await register("bob");

const login = await step("alice logs in with matrix-js-sdk loginRequest", async () => {
  const anon = sdk.createClient({ baseUrl: baseURL, fetchFn: loggingFetch, logger: makeLogger() });
  const r = await anon.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: "alice" }, password, initial_device_display_name: "matrix-js-sdk" });
  check(r?.access_token && r?.user_id === alice.user_id && r?.device_id, `an access token, a device ID and user_id ${alice.user_id}`, safeJSON(r));
  return r;
});

await step("alice's sdk client starts and its first sync reaches PREPARED", async () => {
  client = sdk.createClient({
    baseUrl: baseURL,
    accessToken: login.access_token,
    userId: login.user_id,
    deviceId: login.device_id,
    fetchFn: loggingFetch,
    logger: makeLogger(),
  });
  client.on(ClientEvent.Sync, (state, _prev, data) => {
    if (syncStates[syncStates.length - 1] !== state) syncStates.push(state);
    if (state === "ERROR") lastSyncError = data?.error ? `${data.error.name}: ${data.error.message}` : "(no error given)";
  });
  await client.startClient({ initialSyncLimit: 10 });
  await waitFor("the sync state PREPARED", () => `sync states [${syncStates.join(", ")}]`, () => syncStates.includes("PREPARED"));
  check(client.pushRules?.global, "the sdk to hold alice's push rules (GET /pushrules/)", safeJSON(client.pushRules));
});

const joinRoom = async (name, roomId) => {
  rooms[name] = roomId;
  await waitFor(`alice's sdk to see the invite to ${roomId}`, () => `membership ${client.getRoom(roomId)?.getMyMembership() ?? "(room unknown)"}`,
    () => client.getRoom(roomId)?.getMyMembership() === "invite");
  await client.joinRoom(roomId);
  await waitFor(`alice's sdk to show her joined to ${roomId}`, () => `membership ${client.getRoom(roomId)?.getMyMembership() ?? "(room unknown)"}`,
    () => client.getRoom(roomId)?.getMyMembership() === "join");
};

const roomId = await step("bob creates a room and invites alice; alice joins", async () => {
  const r = await api(bob.access_token, "POST", "/createRoom", { preset: "private_chat", name: "Push test", invite: [alice.user_id] });
  await joinRoom("group", r.room_id);
  return r.room_id;
});

await step("bob sends a message: alice's notification count becomes 1", async () => {
  const { event_id } = await send(bob.access_token, roomId, { msgtype: "m.text", body: "hello there" });
  await waitFor(`event ${event_id} in alice's timeline`, () => "it is not there", () => client.getRoom(roomId)?.findEventById(event_id));
  await waitFor('room.getUnreadNotificationCount("total") = 1', countsSeen(roomId), () => counts(roomId).total === 1);
  check(counts(roomId).highlight === 0, 'highlight count 0 for a message that does not mention alice', countsSeen(roomId)());
});

const mention = await step("bob mentions alice: her highlight count becomes 1", async () => {
  const { event_id } = await send(bob.access_token, roomId, {
    msgtype: "m.text",
    body: "alice: are you there?",
    "m.mentions": { user_ids: [alice.user_id] },
  });
  await waitFor(`event ${event_id} in alice's timeline`, () => "it is not there", () => client.getRoom(roomId)?.findEventById(event_id));
  await waitFor('room.getUnreadNotificationCount("highlight") = 1', countsSeen(roomId), () => counts(roomId).highlight === 1);
  check(counts(roomId).total === 2, "total count 2 (two unread messages that notify)", countsSeen(roomId)());
  return event_id;
});

await step("alice sends a read receipt for the last event: both counts drop to 0 on her next sync", async () => {
  const room = client.getRoom(roomId);
  const last = room.getLiveTimeline().getEvents().at(-1);
  check(last?.getId() === mention, `the last event in alice's timeline to be bob's mention ${mention}`, `${last?.getId()} (${last?.getType()})`);
  const sentAt = Date.now();
  await client.sendReadReceipt(last);
  await waitFor("a /sync after the receipt with unread_notifications {notification_count: 0, highlight_count: 0} for the room",
    countsSeen(roomId),
    () => syncResponses.some((s) => {
      const u = s.at >= sentAt && s.body?.rooms?.join?.[roomId]?.unread_notifications;
      return u && (u.notification_count ?? 0) === 0 && (u.highlight_count ?? 0) === 0;
    }));
  await waitFor("sdk counts total=0 highlight=0", countsSeen(roomId), () => counts(roomId).total === 0 && counts(roomId).highlight === 0);
});

const pusher = {
  kind: "http",
  app_id: "org.myelin.jssdk-test",
  pushkey: "alice-pushkey-1",
  app_display_name: "Myelin push test",
  device_display_name: "node",
  lang: "en",
  data: { url: gatewayURL },
  append: false,
};

await step("alice registers an HTTP pusher (client.setPusher)", async () => {
  await client.setPusher(pusher);
  const { pushers } = await client.getPushers();
  const got = pushers?.find((p) => p.pushkey === pusher.pushkey);
  check(got && got.app_id === pusher.app_id && got.kind === "http" && got.data?.url === gatewayURL,
    `GET /pushers to list pushkey ${pusher.pushkey} for ${pusher.app_id} with data.url ${gatewayURL}`, safeJSON(pushers));
});

const dmId = await step("bob creates a DM with alice (is_direct, trusted_private_chat); alice joins", async () => {
  const r = await api(bob.access_token, "POST", "/createRoom", { preset: "trusted_private_chat", is_direct: true, invite: [alice.user_id] });
  await joinRoom("dm", r.room_id);
  return r.room_id;
});

await step("bob sends a DM: the push gateway receives a notification for it", async () => {
  const { event_id } = await send(bob.access_token, dmId, { msgtype: "m.text", body: "psst, a direct message" });
  let log = null;
  const notification = await waitFor(`a POST /_matrix/push/v1/notify for event ${event_id}`,
    () => `${log?.attempts ?? 0} notify request(s) arrived, notifications accepted: ${safeJSON((log?.notifications ?? []).map((n) => ({ event_id: n.event_id, type: n.type, room_id: n.room_id })))}`,
    async () => {
      log = await http("GET", gatewayLogURL);
      return (log.notifications ?? []).find((n) => n.event_id === event_id);
    });
  const dev = notification.devices?.[0];
  const problems = [];
  if (notification.room_id !== dmId) problems.push(`room_id ${dmId}, saw ${notification.room_id}`);
  if (typeof notification.counts?.unread !== "number" || notification.counts.unread < 1) problems.push(`counts.unread ≥ 1, saw counts ${safeJSON(notification.counts)}`);
  if (dev?.pushkey !== pusher.pushkey) problems.push(`devices[0].pushkey ${pusher.pushkey}, saw ${safeJSON(notification.devices)}`);
  if (dev?.app_id !== pusher.app_id) problems.push(`devices[0].app_id ${pusher.app_id}, saw ${dev?.app_id}`);
  if (notification.sender !== undefined && notification.sender !== bob.user_id) problems.push(`sender ${bob.user_id}, saw ${notification.sender}`);
  check(problems.length === 0, problems.join("; "), `the notification ${safeJSON(notification)}`);
  console.log(`     notification: ${safeJSON(notification)}`);
});

await finish(0);
