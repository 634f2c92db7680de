"""The classifier's pure parts: tokens (the author's words and header fields, not the list's footer or the
delivery path), Robinson/Fisher combining, and the accuracy harness's splits and nested cutoff choice."""

from __future__ import annotations

from mailmoat_antispam import accuracy
from mailmoat_antispam.accuracy import Sample, body_key, choose_cutoff, collection_split, cv_splits
from mailmoat_antispam.bayes import spam_probability, strip_list_footer, tokens
from mailmoat_antispam.content import parse
from mailmoat_antispam.score import Findings
from mailmoat_policy import parse_policy

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


def test_nested_cutoff_is_the_lowest_whose_training_ham_rate_holds(monkeypatch) -> None:
    policy = parse_policy("{}")
    train = [sample(i, "spam-1", f"s{i}") for i in range(100)] + [sample(500 + i, "easy-ham-1", f"h{i}")
                                                                 for i in range(400)]
    # out-of-fold probabilities as the inner folds would give them: one ham at 0.85, the spam spread out
    probability = {s.checksum: (0.5 + (i % 50) / 100 if s.spam else 0.0) for i, s in enumerate(train)}
    probability[train[100].checksum] = 0.85
    monkeypatch.setattr(accuracy.Counts, "probability", lambda self, toks: probability[toks[0]])
    toks = {s.checksum: [s.checksum] for s in train}
    base = {s.checksum: Findings() for s in train}
    cutoff, caught, ham = choose_cutoff(train, toks, base, policy, ham_rate=0.2)
    assert cutoff == 0.9 and ham == 0.0 and 0 < caught < 100  # 0.8 would flag the ham at 0.85: 0.25 %
    cutoff, _, ham = choose_cutoff(train, toks, base, policy, ham_rate=0.3)
    assert cutoff == 0.5 and ham == 0.25  # the lowest of the grid: the one ham flagged is 0.25 %
    # ham that another check flags whatever the classifier says is not the classifier's to answer for
    base[train[101].checksum] = Findings(gtube=True)
    cutoff, _, ham = choose_cutoff(train, toks, base, policy, ham_rate=0.2)
    assert cutoff == 0.9 and ham == 0.25
