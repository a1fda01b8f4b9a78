// A stock socket.io-client 4.x with a credential in the handshake's `auth`: prints
// {"event": "connect"} or {"event": "connect_error", "data": message}, then emits `subscribe`
// with each payload given and prints each acknowledgement, then exits.
// Usage: node sio-auth.js URL TOKEN|- '[payload, ...]'   (NODE_EXTRA_CA_CERTS for TLS)
const { io } = require("socket.io-client");

const [url, token, payloads] = process.argv.slice(2);
const print = (event, data) => process.stdout.write(JSON.stringify({ event, data }) + "\n");
const socket = io(url, {
  transports: ["websocket"],
  auth: token === "-" ? {} : { token },
  reconnection: false,
});
socket.on("connect", async () => {
  print("connect");
  for (const payload of JSON.parse(payloads || "[]")) {
    print("ack", await socket.emitWithAck("subscribe", payload));
  }
  process.exit(0);
});
socket.on("connect_error", (e) => {
  print("connect_error", e.message);
  process.exit(0);
});
setTimeout(() => {
  print("timeout");
  process.exit(1);
}, 15000);
