"""Edit-quality metrics: protocols against hand computations, locality against the reference, batching."""

import math
import warnings

import pandas as pd
import pytest
import torch

from geomprobe.data.requests import EditRequest, Query
from geomprobe.errors import GeomprobeError
from geomprobe.evaluate import (COLUMNS, METRIC_OF_FORM, Reference, evaluate, exact_match, neighborhood_prompts,
                                normalize_answer, reference_predictions, summarize, to_markdown, token_f1)

FRANCE = EditRequest(
    subject="france", relation="capital", prompt="the capital of {} is", target_new="rome", target_true="paris",
    paraphrases=("where is the capital of france ? the capital of france is",),
    neighborhood=("the capital of germany is", "the capital of italy is",
                  "where is the eiffel tower located ? in the city of"),
    case_id="fr")
# two-token targets; relation without a template pool (no question/instruction prompts)
JOHN = EditRequest(subject="john", relation="locomo", prompt="{} lives in", target_new="rome italy",
                   target_true="berlin germany", neighborhood=("apple works at", "microsoft windows is located in"),
                   case_id="john")
REQUESTS = [FRANCE, JOHN]


@pytest.fixture(scope="module")
def lm(tiny_lms):
    return tiny_lms["llama"]


@pytest.fixture(scope="module")
def ref(lm):
    return reference_predictions(lm, REQUESTS, max_new_tokens=16)


def hand(lm, prompt: str, target: str) -> tuple[list[float], list[bool]]:
    """Per-token log-probs and argmax hits of ``target`` after ``prompt``, from one unbatched forward."""
    tok = lm.tokenizer
    p_ids = tok(prompt)["input_ids"]
    ids = tok(prompt + " " + target)["input_ids"]
    assert ids[:len(p_ids)] == p_ids
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    pos = range(len(p_ids), len(ids))
    return [float(logp[t - 1, ids[t]]) for t in pos], [int(logits[t - 1].argmax()) == ids[t] for t in pos]


def hand_greedy_ids(lm, prompt: str, n: int) -> list[int]:
    """``n`` greedy tokens, one unbatched full forward per token (no cache)."""
    ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        for _ in range(n):
            nxt = lm.model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
    return ids[0, -n:].tolist()


def hand_greedy(lm, prompt: str, n: int) -> str:
    return lm.tokenizer.decode(hand_greedy_ids(lm, prompt, n))


def pick(df, **kw):
    mask = pd.Series(True, index=df.index)
    for k, v in kw.items():
        mask &= df[k] == v
    return df[mask]


def test_prob_protocol_agrees_with_a_direct_forward(lm):
    df = evaluate(lm, REQUESTS, forms=("declarative", "paraphrase"), protocols=("prob",))
    checked = 0
    for i, req in enumerate(REQUESTS):
        prompts = {"declarative": req.text, "paraphrase": (req.paraphrases or (None,))[0]}
        for form, prompt in prompts.items():
            if prompt is None:
                continue
            new, _ = hand(lm, prompt, req.target_new)
            true, _ = hand(lm, prompt, req.target_true)
            mean_new, mean_true = sum(new) / len(new), sum(true) / len(true)
            rows = pick(df, request=i, form=form, protocol="prob")
            won = rows[rows.metric == METRIC_OF_FORM[form]].value.item()
            assert won == float(mean_new > mean_true)
            assert rows[rows.metric == "target_prob"].value.item() == pytest.approx(math.exp(mean_new), rel=1e-4)
            checked += 1
    assert checked == 3
    # sums instead of means: same decision rule on the summed log-probs
    df_sum = evaluate(lm, [JOHN], forms=("declarative",), protocols=("prob",), length_normalized=False)
    new, true = hand(lm, JOHN.text, JOHN.target_new)[0], hand(lm, JOHN.text, JOHN.target_true)[0]
    assert pick(df_sum, metric="efficacy").value.item() == float(sum(new) > sum(true))


def test_token_acc_equals_hand_computation(lm):
    df = evaluate(lm, REQUESTS, forms=("declarative", "paraphrase"), protocols=("token_acc",))
    assert set(df.protocol) == {"token_acc"}
    for i, req in enumerate(REQUESTS):
        _, hits = hand(lm, req.text, req.target_new)
        got = pick(df, request=i, form="declarative", metric="efficacy").value.item()
        assert got == pytest.approx(sum(hits) / len(hits))
    assert len(hand(lm, JOHN.text, JOHN.target_new)[1]) == 2  # a two-token target is really scored


def perturbed(lm, scale: float, seed: int = 0):
    """Add large noise to every rewrite weight; returns a function that restores them."""
    saved = [lm.rewrite_module(l).weight.detach().clone() for l in range(lm.n_layers)]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for l in range(lm.n_layers):
            w = lm.rewrite_module(l).weight
            w.add_(torch.randn(w.shape, generator=g) * scale)

    def restore():
        with torch.no_grad():
            for l in range(lm.n_layers):
                lm.rewrite_module(l).weight.copy_(saved[l])
    return restore, saved


def test_locality_is_one_unchanged_and_drops_when_perturbed(lm, ref):
    loc = pick(evaluate(lm, REQUESTS, reference=ref), metric="locality")
    assert set(loc.protocol) == {"prob", "token_acc"}
    assert set(loc.form) == {"declarative", "question", "instruction"}
    assert len(pick(loc, protocol="token_acc", form="declarative")) == 5
    assert (loc.value == 1.0).all()
    restore, saved = perturbed(lm, scale=1.0)
    try:
        hit = pick(evaluate(lm, REQUESTS, reference=ref), metric="locality")
    finally:
        restore()
    means = hit.groupby("protocol").value.mean()
    assert means["token_acc"] < 0.5
    assert means["prob"] < 0.9
    assert all(torch.equal(lm.rewrite_module(l).weight, saved[l]) for l in range(lm.n_layers))
    again = pick(evaluate(lm, REQUESTS, forms=("declarative",), reference=ref), metric="locality")
    assert (again.value == 1.0).all()


def test_locality_false_drops_only_the_locality_rows(lm, ref):
    full = evaluate(lm, REQUESTS, reference=ref)
    none = evaluate(lm, REQUESTS, reference=ref, locality=False)
    assert "locality" not in set(none.metric) and "locality" in set(full.metric)
    rest = full[full.metric != "locality"].reset_index(drop=True)
    assert rest.equals(none.reset_index(drop=True))


def test_evaluate_returns_the_documented_columns(lm, ref):
    df = evaluate(lm, REQUESTS, reference=ref, generation=True, max_new_tokens=3)
    assert list(df.columns) == list(COLUMNS)
    assert set(df.protocol) == {"prob", "token_acc", "gen"}
    assert set(df.metric) == {"efficacy", "paraphrase", "generalization", "locality", "target_prob", "f1",
                              "locality_f1"}
    assert df.value.between(0, 1).all()
    rewrite = df[df.metric.isin(set(METRIC_OF_FORM.values()))]
    assert (rewrite.metric == rewrite.form.map(METRIC_OF_FORM)).all()
    # one row per (request, form, prompt, protocol, metric); n_prompts counts the prompts of (request, form)
    assert not df.duplicated(["request", "form", "prompt_idx", "protocol", "metric"]).any()
    counts = pick(df, protocol="token_acc").groupby(["request", "form", "metric"]).prompt_idx.nunique()
    n = pick(df, protocol="token_acc").groupby(["request", "form", "metric"]).n_prompts.first()
    assert (counts == n).all()
    # question/instruction forms come from the relation's held-out templates (4 for "capital")
    assert pick(df, request=0, form="question", protocol="token_acc", metric="generalization").shape[0] == 4
    assert pick(df, request=1, form="question").empty  # no pool for relation "locomo"


def test_neighbourhood_prompts_in_question_form_only_when_templated(lm):
    q = neighborhood_prompts(FRANCE, "question", lm.tokenizer)
    assert len(q) == 2 * 4  # germany, italy x 4 held-out questions; the eiffel-tower prompt matches no template
    assert sum("germany" in r.text for r in q) == 4 and not any("eiffel" in r.text for r in q)
    assert all(r.text[r.subject_span[0]:r.subject_span[1]] in ("germany", "italy") for r in q)
    assert len(neighborhood_prompts(FRANCE, "declarative")) == 3


def test_requests_without_target_true_use_a_defined_criterion(lm):
    """No target_true: compared with the unedited model's greedy answer (taken by the reference before any edit),
    else P(target_new) > 0.5; the ``criterion`` column says which, and every request gets its efficacy row."""
    from geomprobe.evaluate import CRITERIA, true_target

    req = EditRequest(subject="john", relation="locomo", prompt="{} lives in", target_new="rome italy")
    # without a reference: the probability threshold
    df = evaluate(lm, [req], forms=("declarative",))
    eff = pick(df, protocol="prob", metric="efficacy")
    tp = pick(df, protocol="prob", metric="target_prob").value.item()
    assert len(eff) == 1 and eff.criterion.item() == "prob>0.5" and eff.criterion.item() in CRITERIA
    assert eff.value.item() == float(tp > 0.5)
    assert pick(df, protocol="token_acc").criterion.eq("").all()
    # with the reference: the unedited model's own greedy answer, as many tokens as target_new has (2 here)
    ref = reference_predictions(lm, [req])
    answer, criterion = true_target(req, ref)
    greedy = hand_greedy(lm, req.text, 2).split("\n")[0].strip(" .,?:")
    assert greedy and greedy != req.target_new  # (this tiny model answers "rome rome")
    assert criterion == "beats-greedy" and answer == greedy, (answer, greedy)
    assert ref.greedy_answers == (answer,)
    df = evaluate(lm, [req], forms=("declarative",), reference=ref)
    eff = pick(df, protocol="prob", metric="efficacy")
    assert eff.criterion.item() == "beats-greedy"
    new, true = hand(lm, req.text, req.target_new)[0], hand(lm, req.text, answer)[0]
    assert eff.value.item() == float(sum(new) / len(new) > sum(true) / len(true))
    # a request with its own target_true keeps the MEMIT comparison
    assert pick(evaluate(lm, [JOHN], forms=("declarative",)), protocol="prob",
                metric="efficacy").criterion.item() == "beats-true"


def test_greedy_answer_equal_to_target_new_falls_back_to_the_threshold(lm):
    from geomprobe.evaluate import true_target

    probe = EditRequest(subject="john", relation="locomo", prompt="{} lives in", target_new="x")
    answer = hand_greedy(lm, probe.text, 1).strip()
    assert answer and answer not in ".,?:"
    req = EditRequest(subject="john", relation="locomo", prompt="{} lives in", target_new=answer)
    ref = reference_predictions(lm, [req])
    assert true_target(req, ref) == (None, "prob>0.5")
    eff = pick(evaluate(lm, [req], forms=("declarative",), reference=ref), protocol="prob", metric="efficacy")
    assert eff.criterion.item() == "prob>0.5"


def test_query_answer_is_the_expected_answer(lm):
    query = Query(text="where does john live ?", form="question", answer="rome italy")
    with_answer = EditRequest(subject="john", relation="locomo", prompt="{} lives in", target_new="paris",
                              queries=(query,))
    as_target = EditRequest(subject="john", relation="locomo", prompt="{} lives in", target_new="rome italy",
                            queries=(Query(text=query.text, form="question"),))
    def target_prob(req, form):
        return pick(evaluate(lm, [req], forms=(form,), protocols=("prob",)), metric="target_prob").value.item()

    a = target_prob(with_answer, "question")
    assert a == pytest.approx(target_prob(as_target, "question"))
    assert target_prob(with_answer, "declarative") != pytest.approx(a)


def test_summarize_in_percent_and_markdown(lm, ref):
    df = evaluate(lm, REQUESTS, reference=ref, generation=True, max_new_tokens=3)
    s = summarize(df)
    assert list(s.columns[:7]) == ["protocol", "form", "efficacy", "paraphrase", "generalization", "locality",
                                   "overall"]
    scores = s[["efficacy", "paraphrase", "generalization", "locality", "overall", "target_prob", "f1"]]
    values = scores.to_numpy().ravel()
    values = values[~pd.isna(values)]
    assert len(values) > 10 and ((values >= 0) & (values <= 100)).all()
    row = s[(s.protocol == "token_acc") & (s.form == "declarative")].iloc[0]
    # per-request means first, then across requests
    per_case = pick(df, protocol="token_acc", form="declarative", metric="efficacy").groupby("request").value.mean()
    assert row.efficacy == pytest.approx(100 * per_case.mean())
    a, b = row.efficacy, row.locality
    assert row.overall == pytest.approx(0.0 if a + b == 0 else 2 * a * b / (a + b))
    para = s[(s.protocol == "prob") & (s.form == "paraphrase")].iloc[0]
    assert math.isnan(para.efficacy) and not math.isnan(para.paraphrase)
    md = to_markdown(s)
    lines = md.splitlines()
    assert len(lines) == len(s) + 2
    assert lines[0].startswith("| protocol") and set(lines[1]) <= set("|-:")
    assert all(line.count("|") == len(s.columns) + 1 for line in lines)
    assert "–" in md  # NaN cells


def test_main_table_workspace_evaluation_has_gen_headline_beside_prob_and_token_acc(lm, tmp_path):
    """The main table's evaluation (``Workspace.evaluation``) adds ``gen`` with gen locality, and its Markdown shows
    gen after prob and token_acc and names gen as the headline protocol."""
    from geomprobe.plots.results import results_markdown
    from geomprobe.tables import form_scores
    from geomprobe.workspace import Settings, Workspace

    reqs = REQUESTS
    ws = Workspace(lm, reqs, tmp_path, Settings(), log=lambda s: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev = ws.evaluation("unedited", reqs)
    assert not [w for w in caught if "skipped" in str(w.message)]  # gen locality has a long-enough reference
    assert list(dict.fromkeys(ev.protocol)) == ["prob", "token_acc", "gen"]
    assert not pick(ev, protocol="gen", metric="locality").empty
    assert pick(ev, protocol="gen", metric="locality").value.mean() == 1.0  # unedited model vs its own reference
    n_gen = ws.reference(reqs).max_new_tokens  # the reference the evaluation built is the one shared
    assert n_gen == 1 + max(len(ws.lm.tokenizer(r.target_new, add_special_tokens=False)["input_ids"]) for r in reqs)
    md = results_markdown(form_scores(ev, by=("editor",)))
    assert "**Headline protocol: `gen`**" in md
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    order = [next(p for p in ("token_acc", "prob", "gen") if f"`{p}`" in h) for h in heads]
    assert order == sorted(order, key=["prob", "token_acc", "gen"].index) and set(order) == {"prob", "token_acc", "gen"}
    assert any(h.startswith("## instruction queries — `gen`") for h in heads)
    missing = results_markdown(form_scores(ev[ev.protocol != "gen"], by=("editor",)))
    assert "Headline protocol `gen` is missing" in missing and "`gen` (" not in missing.split("\n## ")[1:]


def test_answer_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("The Rome.", "rome") == 1.0
    assert exact_match("rome italy", "rome") == 0.0
    assert token_f1("rome italy france", "rome italy") == pytest.approx(0.8)
    assert token_f1("a", "the") == 1.0 and token_f1("rome", "") == 0.0


def test_generation_exact_match_and_f1_on_a_known_string(lm):
    gen = hand_greedy(lm, JOHN.text, 2)
    words = gen.split()
    assert len(words) == 2 and all(w.isalpha() and w not in ("a", "an", "the") for w in words)
    reqs = [EditRequest(subject="john", relation="locomo", prompt="{} lives in", target_new=t)
            for t in (gen, f"The {gen}.", f"{words[0]} paris")]
    df = evaluate(lm, reqs, forms=("declarative",), protocols=(), generation=True, max_new_tokens=2)
    em = pick(df, metric="efficacy").sort_values("request").value.tolist()
    f1 = pick(df, metric="f1").sort_values("request").value.tolist()
    assert em == [1.0, 1.0, 0.0]
    assert f1 == pytest.approx([1.0, 1.0, 0.5])


def test_batched_equals_one_by_one(lm, ref):
    kw = dict(reference=ref, generation=True, max_new_tokens=3)
    batched = evaluate(lm, REQUESTS, batch_size=16, **kw)
    single = pd.concat([evaluate(lm, [r], batch_size=1, **kw).assign(request=i) for i, r in enumerate(REQUESTS)])
    key = ["request", "form", "prompt_idx", "protocol", "metric"]
    batched = batched.sort_values(key).reset_index(drop=True)
    single = single.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(batched.drop(columns="value"), single.drop(columns="value"))
    assert batched.value.to_numpy() == pytest.approx(single.value.to_numpy(), abs=1e-5)
    # the reference itself does not depend on batching either
    one = reference_predictions(lm, REQUESTS, forms=("declarative",), max_new_tokens=4, batch_size=1)
    full = [p for p in ref.prompts if p.form == "declarative"]
    assert len(one.prompts) == len(full) == 5
    for a, b in zip(one.prompts, full):
        assert a.continuation == b.continuation[:len(a.continuation)] and a.argmax == b.argmax
        assert a.logp_new == pytest.approx(b.logp_new, abs=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gemma2"])
def test_cached_batched_greedy_matches_plain_greedy(tiny_lms, kind):
    from geomprobe.evaluate import _greedy, _prompt_ids

    lm = tiny_lms[kind]
    texts = ["john lives in", "where is the eiffel tower located ? in the city of", "the capital of france is"]
    got = _greedy(lm, _prompt_ids(lm.tokenizer, texts), [5, 2, 5], batch_size=16)
    assert got == [hand_greedy_ids(lm, t, n) for t, n in zip(texts, (5, 2, 5))]


def test_reference_from_another_model_is_refused(tiny_lms, ref):
    with pytest.raises(GeomprobeError) as err:
        evaluate(tiny_lms["mistral"], REQUESTS, reference=ref)
    assert "\n" not in str(err.value) and "reference_predictions" in str(err.value)
    other = EditRequest(subject="italy", relation="capital", prompt="the capital of {} is", target_new="paris")
    with pytest.raises(GeomprobeError, match="not in the reference"):
        evaluate(tiny_lms["llama"], [other], reference=ref)
    assert isinstance(ref, Reference)
    with pytest.raises(Exception):
        ref.max_new_tokens = 3  # frozen


def test_missing_reference_warns_and_bad_arguments_fail(lm):
    with pytest.warns(UserWarning, match="locality skipped"):
        df = evaluate(lm, [FRANCE], forms=("declarative",))
    assert pick(df, metric="locality").empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(lm, [EditRequest(subject="john", relation="locomo", prompt="{} lives in", target_new="rome")],
                 forms=("declarative",))
    with pytest.raises(GeomprobeError, match="unknown form"):
        evaluate(lm, [FRANCE], forms=("declarative", "poem"))
    with pytest.raises(GeomprobeError, match="unknown protocol"):
        evaluate(lm, [FRANCE], protocols=("bleu",))
