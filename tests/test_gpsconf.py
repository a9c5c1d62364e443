"""`checkpoint gps configure` leaves the receiver at an output that fits its line.

The receiver is a model u-blox that applies the UBX frames it is sent (message
rates, UART rate, save) and answers only on the rate it is at; whether its output
then fits is measured with the simulator's serial-line model (sim/gps.py), the same
one the scenarios run on.
"""

from __future__ import annotations

import struct
import tomllib
from dataclasses import replace

import pytest

from checkpoint import config as configmod
from checkpoint.cli.field import main as field_main
from checkpoint.field import gpsconf
from sim.scenario import BUILTIN_RECEIVERS, burst_ms

# NMEA message ids in class 0xF0, as the u-blox protocol numbers them.
IDS = {0x00: "GGA", 0x01: "GLL", 0x02: "GSA", 0x03: "GSV", 0x04: "RMC", 0x05: "VTG", 0x08: "ZDA"}


class ModelUblox:
    """An M8 at factory settings: 9600 baud, RMC VTG GGA GSA GSV GLL on, ZDA off."""

    def __init__(self) -> None:
        self.baud = 9600
        self.rates = {name: 1 for name in ("RMC", "VTG", "GGA", "GSA", "GSV", "GLL")}
        self.rates["ZDA"] = 0
        self.saved: dict | None = None
        self.out = bytearray()
        self.stuck = False  # ignores CFG-PRT (a port locked by another config)

    def sentences(self) -> tuple[str, ...]:
        order = ("RMC", "VTG", "GGA", "GSA", "GSV", "GLL", "ZDA")
        return tuple(k for k in order if self.rates.get(k))

    def burst_ms(self) -> float:
        """How long one second's output takes on the line at the receiver's rate."""
        rx = replace(BUILTIN_RECEIVERS["ublox-m8"], sentences=self.sentences(), baudrate=self.baud)
        return burst_ms(rx)

    def receive(self, data: bytes) -> None:
        assert data[:2] == gpsconf.SYNC and gpsconf.checksum(data[2:-2]) == data[-2:]
        cls, msg, length = struct.unpack_from("<BBH", data, 2)
        payload = data[6 : 6 + length]
        ack = True
        new_baud = None
        if (cls, msg) == (gpsconf.CLS_CFG, gpsconf.ID_CFG_MSG) and payload[0] == 0xF0:
            self.rates[IDS[payload[1]]] = payload[2]
        elif (cls, msg) == (gpsconf.CLS_CFG, gpsconf.ID_CFG_PRT):
            new_baud = struct.unpack_from("<I", payload, 8)[0]
        elif (cls, msg) == (gpsconf.CLS_CFG, gpsconf.ID_CFG_CFG):
            self.saved = {"baud": self.baud, "rates": dict(self.rates)}
        body = bytes([0x05, 0x01 if ack else 0x00, 2, 0, cls, msg])
        self.out += b"$GNGGA,noise*00\r\n" + gpsconf.SYNC + body + gpsconf.checksum(body)
        if new_baud is not None and not self.stuck:
            self.baud = new_baud  # the ACK above went out at the old rate


class Port:
    """The box end of the serial line, opened at `baud`: bytes pass only at the same rate."""

    def __init__(self, rx: ModelUblox, baud: int) -> None:
        self.rx, self.baud = rx, baud

    def write(self, data: bytes) -> int:
        if self.baud == self.rx.baud:
            self.rx.receive(data)
        return len(data)

    def read(self, n: int) -> bytes:
        chunk = bytes(self.rx.out[:n])
        del self.rx.out[:n]
        # At the wrong rate the receiver's bytes arrive as framing garbage.
        return chunk if self.baud == self.rx.baud else bytes(len(chunk))

    def close(self) -> None:
        pass


@pytest.fixture
def receiver(monkeypatch):
    from checkpoint.box import gps_serial

    rx = ModelUblox()
    monkeypatch.setattr(gps_serial, "open_port", lambda url, baud: Port(rx, baud))
    monkeypatch.setattr("checkpoint.field.doctor.service_state", lambda: "unknown")
    return rx


def box_config(tmp_path, gps: str = '[gps]\nport = "/dev/gps0"\n# factory rate\nbaudrate = 9600\n'):
    path = tmp_path / "box.toml"
    path.write_text(
        f'[box]\nid = "box01"\ncheckpoint = "PC1"\n{gps}[mqtt]\nbroker = "mqtt://127.0.0.1:1883"\n'
    )
    return path


def test_factory_m8_does_not_fit_and_configure_turns_off_what_the_box_does_not_use(
    tmp_path, receiver, capsys
):
    assert receiver.burst_ms() > 750  # ~770 bytes at 9600: ends ~0.85 s after the pulse
    cfg = box_config(tmp_path)
    before = cfg.read_text()
    assert field_main(["gps", "configure", "--config", str(cfg)]) == 0
    assert receiver.sentences() == ("RMC", "GGA", "ZDA")
    assert receiver.burst_ms() < 250  # room to spare at the factory rate
    assert receiver.saved == {"baud": 9600, "rates": receiver.rates}
    assert cfg.read_text() == before  # the rate did not change: nothing to write
    assert "settings saved" in capsys.readouterr().out


def test_configure_with_baud_keeps_every_sentence_and_writes_the_matching_config(
    tmp_path, receiver, capsys
):
    cfg = box_config(tmp_path)
    assert field_main(["gps", "configure", "--baud", "38400", "--config", str(cfg)]) == 0
    assert receiver.baud == 38400 and receiver.saved and receiver.saved["baud"] == 38400
    assert receiver.sentences() == ("RMC", "VTG", "GGA", "GSA", "GSV", "GLL", "ZDA")
    assert receiver.burst_ms() < 250
    text = cfg.read_text()
    assert "baudrate = 38400\n" in text and "# factory rate" in text
    assert configmod.load(cfg).gps.baudrate == 38400
    assert "gps.baudrate = 38400" in capsys.readouterr().out


def test_configure_at_the_wrong_rate_says_so_and_writes_nothing(tmp_path, receiver, capsys):
    cfg = box_config(tmp_path, '[gps]\nport = "/dev/gps0"\nbaudrate = 4800\n')
    before = cfg.read_text()
    assert field_main(["gps", "configure", "--baud", "38400", "--config", str(cfg)]) == 1
    assert receiver.baud == 9600 and receiver.saved is None
    assert cfg.read_text() == before
    assert "wrong baud rate (4800)" in capsys.readouterr().err


def test_a_receiver_that_stays_at_its_rate_leaves_the_config_alone(tmp_path, receiver, capsys):
    receiver.stuck = True
    cfg = box_config(tmp_path)
    before = cfg.read_text()
    assert field_main(["gps", "configure", "--baud", "38400", "--config", str(cfg)]) == 1
    assert cfg.read_text() == before and receiver.saved is None
    assert "no answer at 38400 baud after the rate change" in capsys.readouterr().err


def test_bad_baud_is_refused(tmp_path, receiver, capsys):
    assert field_main(["gps", "configure", "--baud", "12345", "--config", "nope"]) == 1
    assert "--baud must be one of" in capsys.readouterr().err


def test_frames_by_hand():
    # CFG-MSG GSV off: class 06 id 01, length 3, F0 03 00, Fletcher over 06 01 03 00 F0 03 00
    assert gpsconf.cfg_msg_rate(0xF0, 0x03, 0) == bytes.fromhex("B562 0601 0300 F00300 FD15")
    prt = gpsconf.cfg_prt_uart(38400)
    assert prt[:6] == bytes.fromhex("B562 0600 1400")
    port, _, txready, mode, baud, inp, outp, flags, _ = struct.unpack("<BBHIIHHHH", prt[6:26])
    assert (port, txready, mode, baud, inp, outp, flags) == (1, 0, 0x8D0, 38400, 3, 3, 0)
    with pytest.raises(ValueError):
        gpsconf.cfg_prt_uart(12345)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("[gps]\nbaudrate = 9600  # HAT\n[x]\nbaudrate = 1\n", "[gps]\nbaudrate = 38400  # HAT\n"),
        ('[gps]\nport = "/dev/gps0"\n[mqtt]\n', '[gps]\nbaudrate = 38400\nport = "/dev/gps0"\n'),
        ('[box]\nid = "b"\n', '[box]\nid = "b"\n\n[gps]\nbaudrate = 38400\n'),
    ],
)
def test_with_baudrate_changes_only_gps_baudrate(text, expect):
    out = gpsconf.with_baudrate(text, 38400)
    assert out.startswith(expect)
    data = tomllib.loads(out)
    assert data["gps"]["baudrate"] == 38400
    if "x" in data:
        assert data["x"]["baudrate"] == 1
