"""The classifier's pure parts: tokens (the author's words and header fields, not the list's footer or the
delivery path), Robinson/Fisher combining, the accuracy harness's splits and the calibrated cutoff."""

from __future__ import annotations

import pytest

from mailmoat_antispam.accuracy import Sample, collection_split, cv_splits
from mailmoat_antispam.bayes import spam_probability, strip_list_footer, tokens
from mailmoat_antispam.calibrate import (
    LOWEST,
    Labelled,
    body_key,
    calibrate,
    choose,
    learned,
    misjudged,
    out_of_fold,
)
from mailmoat_antispam.content import parse

LIST_MAIL = (
    b"From: Ann <ann@corp.test>\r\nTo: fork@xent.com\r\nSubject: cheap pills\r\nPrecedence: bulk\r\n"
    b"List-Id: Friends of Rohit Khare <fork.xent.com>\r\nX-Beenthere: fork@xent.com\r\nSender: fork-admin@xent.com\r\n"
    b"Errors-To: fork-admin@xent.com\r\nX-Mailer: Blaster 2.0\r\n\r\n"
    b"Order replica watches now.\r\n\r\n---------------------------------------------------\r\n"
    b"This sf.net email is sponsored by: ThinkGeek\r\nWelcome to geek heaven.\r\nhttp://thinkgeek.com/sf\r\n"
    b"_______________________________________________\r\nFork mailing list\r\n"
    b"http://xent.com/mailman/listinfo/fork\r\n"
)


def test_tokens_leave_out_the_lists_footer_and_path_headers() -> None:
    toks = set(tokens(parse(LIST_MAIL)))
    assert {"replica", "watches", "s:cheap", "x-ma:blaster", "from:corp.test"} <= toks
    for gone in ("sponsored", "thinkgeek", "fork", "url:xent.com", "url:thinkgeek.com", "prec:bulk"):
        assert gone not in toks, gone
    assert not any(t.startswith(("hn:", "list:", "send:", "erro:", "to:")) for t in toks)


def test_footer_stripping_keeps_mail_without_a_list_footer() -> None:
    text = "Dear friend,\n\n----------------\nour offer: http://shop.test/buy\n\nRegards\n"
    assert strip_list_footer(text) == text
    signed = "Hello\n\nsee you\n-- \nIrish Linux Users' Group\nhttp://www.linux.ie/mailman/listinfo/ilug\n"
    assert strip_list_footer(signed) == "Hello\n\nsee you\n"
    bare = "Send money now.\n\n\nhttp://xent.com/mailman/listinfo/fork\n"
    assert strip_list_footer(bare).strip() == "Send money now."


def test_html_in_a_text_part_gives_words_not_tags() -> None:
    data = b"From: a@b.test\r\nSubject: x\r\n\r\n<html><body><font size=3 color=red>Buy gold</font></body></html>\r\n"
    toks = tokens(parse(data))
    assert "buy" in toks and "gold" in toks
    assert not {"font", "size", "color", "html"} & set(toks)


def test_fisher_combining_is_symmetric_and_ignores_unknown_tokens() -> None:
    assert spam_probability([], 10, 10) == 0.5
    spammy = spam_probability([(9, 0)] * 20, 10, 10)
    hammy = spam_probability([(0, 9)] * 20, 10, 10)
    assert spammy > 0.99 and hammy < 0.01 and abs(spammy + hammy - 1) < 1e-9
    assert spam_probability([(0, 0)] * 50 + [(9, 0)] * 20, 10, 10) == spammy


def sample(n: int, group: str, body: str) -> Sample:
    data = f"Subject: m{n}\r\n\r\n{body}\r\n".encode()
    return Sample(group, f"{n:032x}", data, body_key(data))


def test_equal_bodies_never_straddle_folds_and_the_collection_split_drops_seen_bodies() -> None:
    samples = [sample(i, "spam-1" if i % 3 else "easy-ham-1", f"body {i % 40}") for i in range(200)]
    samples += [sample(1000 + i, "spam-2", f"body {i}") for i in range(50)]
    assert body_key(b"S: 1\r\n\r\nHello   World\r\n") == body_key(b"S: 2\r\n\r\nhello world")
    for train, test in cv_splits(samples, 5):
        assert not {s.body for s in train} & {s.body for s in test}
        assert len(train) + len(test) == len(samples)
    train, test, dropped = collection_split(samples)
    assert {s.group for s in train} == {"spam-1", "easy-ham-1"} and {s.group for s in test} == {"spam-2"}
    assert dropped == 40 and not {s.body for s in train} & {s.body for s in test}


def labelled(n: int, spam: bool, words: str) -> Labelled:
    return Labelled(words.split(), spam, body_key(f"S: {n}\r\n\r\n{words}\r\n".encode()))


def test_the_calibrated_cutoff_is_the_lowest_that_keeps_the_ham_rate() -> None:
    spam = [True] * 100 + [False] * 1000
    probabilities = [0.3 + i / 200 for i in range(100)] + [0.0] * 996 + [0.95, 0.6, 0.6, 0.4]
    cutoff, caught, flagged = choose(probabilities, spam, ham_rate=0.3)  # 3 of 1000 ham may be flagged
    assert 0.4 < cutoff < 0.401 and flagged == 0.3 and caught == 79.0  # 0.3 + i / 200 > 0.4: i >= 21
    cutoff, _, flagged = choose(probabilities, spam, ham_rate=0.2)  # 2: the tie at 0.6 cannot be split
    assert 0.6 < cutoff < 0.601 and flagged == 0.1
    cutoff, _, flagged = choose(probabilities, spam, ham_rate=0.0)
    assert 0.95 < cutoff < 0.951 and flagged == 0.0
    assert choose([0.0] * 10, [False] * 10, 0.3)[0] == LOWEST  # never below the floor


def test_calibration_is_out_of_fold_and_keeps_equal_bodies_together() -> None:
    messages = [labelled(i, True, f"cheap pills offer{i % 7} now") for i in range(60)]
    messages += [labelled(100 + i, False, f"meeting agenda item{i} thursday") for i in range(60)]
    messages.append(labelled(999, False, "cheap pills offer1 now"))  # ham with a spam's very text
    probabilities = out_of_fold(messages, 3)
    assert all(p > 0.9 for p in probabilities[:60]) and all(p < 0.1 for p in probabilities[60:120])
    assert probabilities[-1] > 0.9  # the copies of its body were in its own fold: it was not learned as ham
    result = calibrate(messages, ham_rate=0.0)
    assert result.cutoff > probabilities[-1] and result.ham_flagged == 0.0 and result.nham == 61
    with pytest.raises(ValueError):
        calibrate(messages[:40] + messages[60:], 0.3)


def test_reinforcement_counts_the_misjudged_twice_and_calibration_keeps_the_better_classifier() -> None:
    messages = [labelled(i, True, f"cheap pills offer{i % 7} now") for i in range(60)]
    messages += [labelled(100 + i, False, f"meeting agenda item{i} thursday") for i in range(60)]
    messages.append(labelled(999, False, "cheap pills offer1 now thursday"))  # ham that reads as spam
    assert misjudged(messages) == [120]
    plain, reinforced = learned(messages, reinforce=False), learned(messages)
    assert (plain.nspam, plain.nham) == (60, 61) and (reinforced.nspam, reinforced.nham) == (60, 62)
    assert reinforced.ham["thursday"] == plain.ham["thursday"] + 1 and reinforced.spam == plain.spam
    forced = calibrate(messages, reinforce=True)
    assert forced.reinforced and not calibrate(messages, reinforce=False).reinforced
    chosen = calibrate(messages)
    best = max(calibrate(messages, reinforce=False).spam_caught, forced.spam_caught)
    assert chosen.spam_caught == best
    assert chosen.reinforced == (forced.spam_caught > calibrate(messages, reinforce=False).spam_caught)


def _reference_tokens(content, limit: int) -> list[str]:
    """``tokens`` as first written: every body word through ``_words``, the limit checked after each."""
    import mailmoat_antispam.bayes as bayes

    head = dict.fromkeys(tokens(type(content)(headers=content.headers, subject=content.subject)))
    head.pop("html:yes", None)
    out = dict(head)
    kept = bayes.strip_list_footer(content.text)
    for token in bayes._words(kept, ""):
        out.setdefault(token, None)
        if len(out) >= limit:
            break
    return list(out)


@pytest.mark.parametrize("limit", [3000, 40, 5, 1])
def test_body_words_give_the_tokens_of_a_word_by_word_reading(monkeypatch, limit: int) -> None:
    """Repeated words and pieces are skipped, never a token or its place; the limit stops at the same word,
    also when the header tokens alone reach it."""
    import mailmoat_antispam.bayes as bayes

    monkeypatch.setattr(bayes, "MAX_TOKENS", limit)
    body = ("Der Zug f\u00e4hrt um 10.30 Uhr -- again,again again. O'Brien's $5.00 offer_now!! "
            "\u0130stanbul \u0130STANBUL x y z " + "w" * 25 + " " + "supercalifragilisticexpialidocious "
            + "the quick brown fox jumps over the lazy dog " * 20 + "tab\tseparated\u00a0nbsp\u2003em words")
    content = parse(b"Subject: Hello there friend\r\nFrom: Ann <ann@example.org>\r\n\r\n" + body.encode() + b"\r\n")
    assert tokens(content) == _reference_tokens(content, limit)
