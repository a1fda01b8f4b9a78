// A stock socket.io-client 4.x: connects, subscribes to devices' rooms, and prints every
// event as one JSON line on stdout: {"event": name, "data": payload, "at": epoch ms}.
// Usage: node sio-listen.js URL DEVICE[,DEVICE...] [--transport websocket|polling] [--token T]
// (NODE_EXTRA_CA_CERTS for TLS). A disconnect is printed with its reason; the client does not
// reconnect after the server disconnects it.
const { io } = require("socket.io-client");

const [url, devices, ...rest] = process.argv.slice(2);
const option = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const transport = option("--transport");
const token = option("--token");
const socket = io(url, {
  ...(transport ? { transports: [transport] } : {}),
  ...(token ? { auth: { token } } : {}),
});
const print = (event, data) =>
  process.stdout.write(JSON.stringify({ event, data, at: Date.now() }) + "\n");

socket.on("connect", async () => {
  const answer = await socket.emitWithAck("subscribe", { devices: devices.split(",") });
  print("subscribed", answer);
  // A refused subscription is answered too, with the reason.
  const refused = await socket.emitWithAck("subscribe", { rooms: ["lobby"] });
  print("refused", refused);
});
socket.on("device-state-change", (n) => print("device-state-change", n));
socket.on("datastream", (d) => print("datastream", d));
socket.on("connect_error", (e) => print("connect_error", String(e)));
socket.on("disconnect", (reason) => print("disconnect", reason));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
