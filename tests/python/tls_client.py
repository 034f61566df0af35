"""A wss:// client for the TLS test: Python's ssl (OpenSSL) verifies the
server's certificate against the given PEM, then websockets speaks the
roomcast.v1.msgpack protocol: subscribe, publish with an ack, receive it.

usage: tls_client.py wss://localhost:PORT/ws CERT.pem   (exit 0: all good)
"""

import asyncio
import ssl
import sys

import msgpack
from websockets.asyncio.client import connect


async def main(url, cafile):
    context = ssl.create_default_context(cafile=cafile)
    async with connect(url, ssl=context, subprotocols=["roomcast.v1.msgpack"]) as ws:
        assert ws.subprotocol == "roomcast.v1.msgpack", ws.subprotocol
        version = ws.transport.get_extra_info("ssl_object").version()
        await ws.send(msgpack.packb({"id": 1, "subscribe": {"room": "secure"}}))
        reply = msgpack.unpackb(await ws.recv())
        assert reply["reply"]["id"] == 1 and "ack" in reply["reply"], reply
        await ws.send(msgpack.packb({"id": 2, "publish": {"room": "secure", "data": b"over tls"}}, use_bin_type=True))
        seen = {"ack": False, "message": False}
        while not all(seen.values()):
            event = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10))
            if "reply" in event:
                assert event["reply"]["id"] == 2 and "ack" in event["reply"], event
                seen["ack"] = True
            else:
                assert event["message"]["data"] == b"over tls", event
                seen["message"] = True
        print(f"tls_client: ok over {version}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
