"""Our SRS addresses against postsrsd's: the same secret and day give the same SRS0 and SRS1
addresses, each side reverses the other's, and each refuses what the other would not have made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat_mail.srs import SrsError, forward, reverse
from tests.support.postsrsd import PostSrsd, postsrsd_binary

SECRET = b"shared srs secret"
DOMAIN = "srs.example.com"


@pytest.fixture(scope="module")
def postsrsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostSrsd]:
    if postsrsd_binary() is None:
        pytest.skip("postsrsd is not installed (apt-get install postsrsd; scripts/setup.sh --test)")
    with PostSrsd(Path(tmp_path_factory.mktemp("postsrsd")), DOMAIN, SECRET) as server:
        yield server


@pytest.mark.parametrize("sender", [
    "ann@sender.test",
    "Alice.Smith+tag@Partner.Example",
    "SRS0=abcd=AB=orig.example=user@fwd.example",            # a forwarder's SRS0: SRS1
    "SRS1=wxyz=first.example==abcd=AB=orig.example=u@second.example",  # an SRS1 of another's
])
def test_same_addresses_and_reversible_both_ways(postsrsd: PostSrsd, sender: str) -> None:
    code, theirs = postsrsd.forward(sender)
    assert code == 200, theirs
    ours = forward(sender, DOMAIN, SECRET)
    assert ours == theirs  # (a test running across midnight UTC would see different days)
    code, back = postsrsd.reverse(ours)
    assert code == 200 and back == reverse(theirs, DOMAIN, [SECRET], 21).address


def test_forgeries_are_refused_by_both(postsrsd: PostSrsd) -> None:
    forged = forward("ann@sender.test", DOMAIN, SECRET).replace("=ann@", "=eve@")
    assert postsrsd.reverse(forged)[0] != 200
    with pytest.raises(SrsError):
        reverse(forged, DOMAIN, [SECRET], 21)
    other = forward("ann@sender.test", DOMAIN, b"another secret")
    assert postsrsd.reverse(other)[0] != 200
    with pytest.raises(SrsError):
        reverse(other, DOMAIN, [SECRET], 21)
