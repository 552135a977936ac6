"""The enrollment code as a QR code, for a terminal (``edge device add``) and the console."""

from __future__ import annotations

import io

import qrcode
import qrcode.image.svg


def enroll_uri(code: str, fingerprint: str, https_url: str) -> str:
    """What the QR code carries: everything a register with a camera needs to enroll."""
    return f"edge-enroll:{code}?hub={https_url}&ca={fingerprint}"


def qr_ascii(payload: str) -> str:
    qr = qrcode.QRCode(border=1)
    qr.add_data(payload)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def qr_svg(payload: str) -> str:
    """An inline SVG (no image library, no file): the console embeds it in the page."""
    image = qrcode.make(payload, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    return str(image.to_string(encoding="unicode"))
