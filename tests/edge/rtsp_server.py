"""A loopback RTSP server for the capture tests (GStreamer's RTSP server).

Runs under Debian's /usr/bin/python3 (PyGObject is not in the venv), started as a subprocess by the
`rtsp_server` fixture. Prints the bound port as one line on stdout once it is serving, then runs until
killed. Serves a video file (`--video FILE`, H.264 re-encoded) or, without one, a generated test pattern.

    /usr/bin/python3 tests/edge/rtsp_server.py [--port N] [--video FILE] [--loop] [--mount /cam]
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODE = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=800 ! rtph264pay name=pay0 pt=96"


def launch_line(video: str | None, loop: bool, fps: int) -> str:
    if video and loop:
        # multifilesrc restarts the file at its end: a camera that never stops.
        src = f'multifilesrc location="{video}" loop=true ! decodebin'
    elif video:
        src = f'filesrc location="{video}" ! decodebin'
    else:
        src = f"videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate={fps}/1"
    return f"( {src} ! videoconvert ! video/x-raw,format=I420 ! {ENCODE} )"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--video", help="file to serve (default: a generated test pattern)")
    parser.add_argument("--loop", action="store_true", help="restart the file at its end")
    parser.add_argument("--fps", type=int, default=25, help="frame rate of the generated pattern")
    parser.add_argument("--mount", default="/cam")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.video, args.loop, args.fps))
    factory.set_shared(True)  # one encoder for every reader, like a camera
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr)
        return 1
    print(server.get_bound_port(), flush=True)

    GLib.MainLoop().run()  # until killed (SIGTERM's default action ends it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
