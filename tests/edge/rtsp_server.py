"""A loopback RTSP server for the capture tests (GStreamer's RTSP server).

Runs under Debian's /usr/bin/python3 (with python3-gi and GStreamer's RTSP server), started as a subprocess by
the `rtsp_server` fixture and bench/edge.py. Prints the bound port as one line on stdout once it is serving, then
runs until killed. Serves a video file (`--video FILE`, H.264 re-encoded) or, without one, a generated test
pattern. `--passthrough` serves an H.264 file's own stream without re-encoding, looped forever with timestamps
running on (a 1080p camera costs the server next to nothing: the benchmark's cameras).

    /usr/bin/python3 tests/edge/rtsp_server.py [--port N] [--video FILE] [--loop] [--passthrough] [--mount /cam]
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402, F401

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


class Passthrough:
    """The access units of an H.264 file in memory, pushed into the served pipeline's appsrc in a loop."""

    LAUNCH = (
        "( appsrc name=src format=time ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )

    def __init__(self, video: str):
        pipeline = Gst.parse_launch(
            f'filesrc location="{video}" ! parsebin ! h264parse '
            "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
        )
        sink = pipeline.get_by_name("sink")
        pipeline.set_state(Gst.State.PLAYING)
        self.units: list[tuple[bytes, int, int, bool]] = []  # (data, pts, dts, delta unit)
        self.caps = None
        while (sample := sink.try_pull_sample(5 * Gst.SECOND)) is not None:
            buf = sample.get_buffer()
            self.caps = self.caps or sample.get_caps()
            self.units.append(
                (buf.extract_dup(0, buf.get_size()), buf.pts, buf.dts, buf.has_flags(Gst.BufferFlags.DELTA_UNIT))
            )
        pipeline.set_state(Gst.State.NULL)
        if not self.units:
            raise SystemExit(f"--passthrough: no H.264 stream in {video}")
        ok, num, den = self.caps.get_structure(0).get_fraction("framerate")
        self.frame_ns = Gst.SECOND * den // num if ok and num else Gst.SECOND // 25
        self.first_dts = self.units[0][2] if self.units[0][2] != Gst.CLOCK_TIME_NONE else 0

    def configure(self, _factory, media) -> None:
        # Each new media (the first client after none) starts at the clip's first (key) frame at time 0.
        src = media.get_element().get_child_by_name("src")
        src.set_property("caps", self.caps)
        counter = [0]
        src.connect("need-data", lambda appsrc, _length: self.push(appsrc, counter))

    def push(self, src, counter: list[int]) -> None:
        loop, i = divmod(counter[0], len(self.units))
        data, pts, dts, delta = self.units[i]
        offset = loop * len(self.units) * self.frame_ns - self.first_dts
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = pts + offset
        buf.dts = (dts if dts != Gst.CLOCK_TIME_NONE else pts) + offset
        buf.duration = self.frame_ns
        if delta:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        counter[0] += 1
        src.emit("push-buffer", buf)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--video", help="file to serve (default: a generated test pattern)")
    parser.add_argument("--loop", action="store_true", help="restart the file at its end")
    parser.add_argument("--fps", type=int, default=25, help="frame rate of the generated pattern")
    parser.add_argument("--passthrough", action="store_true", help="serve the file's H.264 as is, looped")
    parser.add_argument("--mount", default="/cam")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    if args.passthrough:
        if not args.video:
            parser.error("--passthrough needs --video")
        source = Passthrough(args.video)
        factory.set_launch(Passthrough.LAUNCH)
        factory.connect("media-configure", source.configure)
    else:
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
