// N stock socket.io-client 4.x sockets, each subscribed to the given devices' rooms; prints
// {"connected": N} once all are subscribed, then every second {"events": total so far}.
// Usage: node sio-count.js URL DEVICE[,DEVICE...] N
const { io } = require("socket.io-client");

const [url, devices, n] = process.argv.slice(2);
const count = Number(n);
let events = 0;
let ready = 0;
for (let i = 0; i < count; i++) {
  const socket = io(url, { transports: ["websocket"], forceNew: true });
  socket.on("connect", async () => {
    await socket.emitWithAck("subscribe", { devices: devices.split(",") });
    if (++ready === count) process.stdout.write(JSON.stringify({ connected: count }) + "\n");
  });
  socket.on("device-state-change", () => events++);
}
setInterval(() => process.stdout.write(JSON.stringify({ events }) + "\n"), 1000);
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
