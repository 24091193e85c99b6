// A WebSocket server on the `ws` library (what LM Studio's own server is built on),
// for tests/conformance/test_node_ws.py. Prints its port, then obeys text commands:
//   echo:<text>   -> sends <text> back
//   ping:<data>   -> sends a ping with <data>; the pong's data comes back as "pong:<data>"
//   frag:<text>   -> sends <text> back in three fragments
//   big:<n>       -> sends a text message of n "x"
//   close:<code>  -> closes with <code> and reason "bye"
// Any other text is an error. It exits when its stdin closes.
const { WebSocketServer } = require(process.env.WS_PATH);

const server = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/llm" });
server.on("listening", () => console.log(server.address().port));
server.on("connection", (sock) => {
  sock.on("pong", (data) => sock.send("pong:" + data.toString()));
  sock.on("message", (data, isBinary) => {
    const text = data.toString();
    const [cmd, ...rest] = text.split(":");
    const arg = rest.join(":");
    if (isBinary) sock.send("binary:" + data.length);
    else if (cmd === "echo") sock.send(arg);
    else if (cmd === "ping") sock.ping(arg);
    else if (cmd === "frag") {
      const third = Math.ceil(arg.length / 3);
      sock.send(arg.slice(0, third), { fin: false });
      sock.send(arg.slice(third, 2 * third), { fin: false });
      sock.send(arg.slice(2 * third), { fin: true });
    } else if (cmd === "big") sock.send("x".repeat(Number(arg)));
    else if (cmd === "close") sock.close(Number(arg), "bye");
    else sock.send("error:unknown command " + cmd);
  });
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
