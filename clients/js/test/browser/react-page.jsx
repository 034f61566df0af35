// The React test page: StrictMode on, one component following a room with
// useRoom and rendering its live messages. Query: ?url=ws://...&room=...
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { Client } from "../../dist/index.js";
import { RoomcastProvider, useRoom } from "../../dist/react.js";

const params = new URLSearchParams(location.search);
const client = new Client(params.get("url"));
client.connect();
// Mounted once connected, so that StrictMode's second subscribe meets a live
// connection (before it, subscribes wait and only one would go out anyway).
await new Promise((resolve) => client.on("connected", resolve));

function Room({ room }) {
  const { messages, state } = useRoom(room, { limit: 50 });
  return (
    <section>
      <p id="state">{state}</p>
      <ul id="messages">
        {messages.map((m) => (
          <li key={m.offset}>
            {m.offset}:{new TextDecoder().decode(m.data)}
          </li>
        ))}
      </ul>
    </section>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <RoomcastProvider client={client}>
      <Room room={params.get("room")} />
    </RoomcastProvider>
  </StrictMode>,
);
