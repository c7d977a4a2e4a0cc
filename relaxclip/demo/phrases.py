"""The synthetic benchmark's phrase bank for everything that is *not* a labelled finding.

Stock normal statements (heart, mediastinum, lungs, bones, normal impressions), technique and
comparison sentences, incidental findings outside the label set, and support devices.  All
wording is our own, written from general radiology knowledge (no text from any report archive
was copied or mined).  The per-finding phrasing lives in the findings table
``relaxclip/demo/findings.json``, read into :data:`relaxclip.demo.synthetic.FINDINGS`
(:class:`~relaxclip.demo.synthetic.FindingSpec`).

Clauses are lower-case fragments without a final period.  Stock statements are *composed*: a
subject and a predicate, each drawn from a short list with Zipf weights (:func:`zipf`), with
number agreement (:func:`compose`).  The product of two Zipf factors gives the flat head of the
sentence-frequency distribution measured on real reports (log-log slope about -0.6 over the 50
most frequent sentences), which one Zipf list over whole sentences cannot give without very long
hand-written lists.  No clause here mentions a labelled finding, except where noted (the heart
predicates deny cardiomegaly; one lungs predicate denies airspace disease), and the writer tags
those.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Rng = np.random.Generator

SIDES: tuple[str, str] = ("left", "right")
SEVERITY: tuple[str, str, str] = ("mild", "moderate", "severe")
SIZE: tuple[str, str, str] = ("small", "moderate", "large")
_ORDINALS = ("fourth", "fifth", "sixth", "seventh", "eighth", "ninth")

Subjects = tuple[tuple[str, int], ...]
"""``(subject, grammatical number)`` pairs; number 1 singular, 2 plural."""

HEART_SUBJECTS: Subjects = (
    ("heart size", 1),
    ("the heart", 1),
    ("cardiac size", 1),
    ("the cardiac silhouette", 1),
    ("heart", 1),
    ("the heart size", 1),
    ("cardiac silhouette size", 1),
)
HEART_PREDICATES = (
    "is normal",
    "is within normal limits",
    "is normal in size",
    "is not enlarged",
    "is upper limits of normal",
    "remains normal",
    "is stable and normal",
    "appears normal",
)
MEDIASTINUM_SUBJECTS: Subjects = (
    ("the mediastinal contours", 2),
    ("the mediastinum", 1),
    ("hilar and mediastinal contours", 2),
    ("the mediastinal silhouette", 1),
    ("mediastinal contours", 2),
    ("the hila", 2),
    ("the hilar contours", 2),
    ("mediastinal width", 1),
    ("the aortic and hilar contours", 2),
    ("pulmonary vasculature", 1),
)
MEDIASTINUM_PREDICATES = (
    "{is} normal",
    "{is} within normal limits",
    "{is} unremarkable",
    "{is} stable",
    "{is} normal in appearance",
    "{is} grossly normal",
)
CARDIOMEDIASTINAL_SUBJECTS: Subjects = (
    ("the cardiomediastinal silhouette", 1),
    ("cardiomediastinal silhouette", 1),
    ("the heart and mediastinum", 2),
    ("the cardiac and mediastinal contours", 2),
    ("heart size and mediastinal contours", 2),
    ("the cardiomediastinal contours", 2),
    ("cardiomediastinal contours", 2),
    ("the heart and hila", 2),
)
LUNG_SUBJECTS: Subjects = (
    ("the lungs", 2),
    ("lungs", 2),
    ("both lungs", 2),
    ("the lung fields", 2),
    ("the lungs bilaterally", 2),
)
LUNG_PREDICATES = (
    "{is} clear",
    "{is} well expanded and clear",
    "{is} clear without focal opacity",
    "{is} well aerated",
    "{is} clear and well aerated",
    "{is} normally inflated",
    "{is} grossly clear",
    "{is} free of focal airspace disease",  # denies consolidation (tagged by the writer)
    "{is} hyperlucent but clear",
)
BONE_SUBJECTS: Subjects = (
    ("the osseous structures", 2),
    ("bony structures", 2),
    ("the visualized bones", 2),
    ("osseous structures", 2),
    ("the bony thorax", 1),
    ("visualized osseous structures", 2),
    ("the skeletal structures", 2),
    ("the soft tissues and bones", 2),
)
BONE_PREDICATES = (
    "{is} intact",
    "{is} unremarkable",
    "{is} within normal limits",
    "show no acute abnormality",
    "{is} grossly intact",
    "{is} normal for age",
)
BONE_SINGLE = (
    "no acute bony abnormality",
    "no acute osseous abnormality",
    "no displaced rib fracture",
    "no acute fracture",
    "no acute bony findings",
)
IMPRESSION_LEADS = ("no acute", "no evidence of acute", "no radiographic evidence of acute",
                    "no active", "no")  # fmt: skip
IMPRESSION_ORGANS = (
    "cardiopulmonary",
    "",
    "intrathoracic",
    "pulmonary",
    "cardiopulmonary or osseous",
)
IMPRESSION_NOUNS = ("abnormality", "disease", "process", "findings", "pathology")
IMPRESSION_SINGLE = (
    "normal chest",
    "normal chest radiograph",
    "negative chest radiograph",
    "normal chest x-ray",
    "no acute radiographic abnormality",
    "stable normal chest",
    "negative study",
    "clear lungs",
)
LUNGS_WORDS = ("the lungs", "both lungs", "the lung fields", "the lungs bilaterally")
CLEAR_WORDS = (
    "are clear",
    "are well expanded and clear",
    "are clear and well aerated",
    "remain clear",
    "are normally expanded",
    "are without focal opacity",
    "show no focal abnormality",
    "are grossly clear",
)
NEGATION_LEADS = ("no", "no evidence of", "there is no", "negative for", "without evidence of")
"""Leads of a negation list (``"<lead> <finding>, <finding> or <finding>"``), Zipf-weighted."""
LUNGS_NEGATION_JOINS = (", with no ", ", and there is no ", " without ", "; no ")
TECHNIQUE = (
    "PA and lateral views of the chest were obtained",
    "frontal and lateral views of the chest",
    "two views of the chest",
    "single frontal view of the chest",
    "portable AP view of the chest",
    "PA and lateral chest radiographs were reviewed",
    "upright PA and lateral views",
)
STABLE = (
    "no significant interval change",
    "stable appearance of the chest",
    "unchanged from the prior examination",
    "no interval change since the prior study",
    "stable compared with the previous radiograph",
    "findings are similar to the prior study",
    "no change from the prior study",
)
PRIOR = (
    "the prior study",
    "the previous examination",
    "the prior radiograph",
    "the last study",
    "the examination of last year",
    "the comparison study",
    "prior imaging",
    "the previous film",
)
CHANGE_WORDS = ("stable ", "unchanged ", "new ", "persistent ", "increased ", "decreased ")
"""Comparison qualifiers put before a finding's descriptor (``{q}`` of a finding frame)."""
HEDGES = ("likely ", "probably ", "most likely ", "most consistent with ", "compatible with ",
          "suggestive of ")  # fmt: skip
"""Hedges of the 'probably present' kind only (a finding stated with one stays positive)."""
IMPRESSION_CHANGE_LEADS = ("stable ", "unchanged ", "new ", "interval increase in ", "improving ",
                           "persistent ")  # fmt: skip
IMPRESSION_CHANGE_TAILS = (", unchanged", ", new since the prior study", ", slightly improved",
                           ", similar to prior")  # fmt: skip
IMPRESSION_OTHERWISE = (
    "otherwise no acute cardiopulmonary abnormality",
    "no other acute abnormality",
)


def zipf(rng: Rng, n: int, a: float) -> int:
    """An index in ``range(n)`` drawn with probability proportional to ``1 / (i + 1) ** a``."""
    w = 1.0 / np.arange(1, n + 1) ** a
    return int(rng.choice(n, p=w / w.sum()))


def pick(rng: Rng, options: Sequence[str]) -> str:
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def compose(rng: Rng, subjects: Subjects, predicates: Sequence[str], a: float) -> str:
    """``"<subject> <predicate>"``, both Zipf-weighted with exponent ``a``; ``{is}`` in the
    predicate becomes ``is``/``are`` and ``show``/``is`` agree with the subject's number."""
    subject, number = subjects[zipf(rng, len(subjects), a)]
    predicate = predicates[zipf(rng, len(predicates), a)]
    if number == 2:
        predicate = predicate.replace("{is}", "are")
        if predicate.startswith("is "):
            predicate = "are " + predicate[3:]
    else:
        predicate = predicate.replace("{is}", "is").replace("show ", "shows ")
    return f"{subject} {predicate}"


def measurement(rng: Rng, lo: float, hi: float) -> str:
    """A size between ``lo`` and ``hi`` cm: ``"N mm"`` under 1 cm, else ``"N.N cm"``."""
    v = rng.uniform(lo, hi)
    return f"{round(v * 10)} mm" if v < 1.0 else f"{v:.1f} cm"


def location(rng: Rng, side: str) -> str:
    """A lung location on ``side`` (``"left"``/``"right"``): lobe, zone, base/apex or region (the
    middle lobe only on the right)."""
    lobe = pick(rng, ("upper", "lower") if side == "left" else ("upper", "middle", "lower"))
    form = int(rng.integers(5))
    if lobe == "middle":
        return "right middle lobe" if form < 3 else "right midlung zone"
    lower = lobe == "lower"
    return (
        f"{side} {lobe} lobe",
        f"{side} {lobe} lung zone",
        f"{lobe} {side} lung",
        f"{side} lung {'base' if lower else 'apex'}",
        f"{side} {'infrahilar' if lower else 'suprahilar'} region",
    )[form]


_INCIDENTAL_WEIGHTS = np.array([16, 14, 12, 10, 9, 9, 8, 8, 7, 7]) / 100


def incidental(rng: Rng, change: str) -> str:
    """One incidental finding outside the label set (a clause), from ten families: degenerative
    spine or shoulder, calcified granuloma, aorta, hyperinflation, scarring, old fractures or
    scoliosis, surgical clips, nodes or diaphragm, apical pleural thickening, low volumes or
    rotation.  ``change`` is a comparison qualifier (``""`` or e.g. ``"stable "``)."""
    side = pick(rng, SIDES)
    mild = pick(rng, SEVERITY[:2])
    q = change
    k = int(rng.choice(10, p=_INCIDENTAL_WEIGHTS))
    if k == 0:
        return pick(rng, ("degenerative changes of the thoracic spine",
                          f"{mild} degenerative changes in the thoracic spine",
                          "multilevel degenerative disc disease of the thoracic spine",
                          f"{mild} thoracic spondylosis", "osteophytes along the thoracic spine",
                          f"{mild} degenerative changes of the {side} shoulder"))  # fmt: skip
    if k == 1:
        loc = location(rng, side)
        return pick(rng, (f"{q}calcified granuloma in the {loc}",
                          f"small calcified granuloma projecting over the {loc}",
                          f"punctate calcified granuloma, {loc}",
                          f"{measurement(rng, 0.2, 0.9)} calcified granuloma in the {loc}",
                          "scattered calcified granulomas"))  # fmt: skip
    if k == 2:
        return pick(rng, ("the thoracic aorta is tortuous", f"{q}tortuous thoracic aorta",
                          "atherosclerotic calcification of the aortic arch",
                          f"{mild} tortuosity and calcification of the aorta",
                          "the aorta is mildly ectatic", "aortic knob calcification"))  # fmt: skip
    if k == 3:
        return pick(rng, ("the lungs are hyperinflated",
                          "hyperexpanded lungs with flattened hemidiaphragms",
                          f"{q}emphysematous changes in both lungs",
                          "changes of chronic obstructive pulmonary disease",
                          "hyperinflation suggests chronic lung disease",
                          f"{pick(rng, SEVERITY)} hyperinflation of the lungs"))  # fmt: skip
    if k == 4:
        loc = location(rng, side)
        return pick(rng, (f"{q}linear scarring in the {loc}", f"minimal scarring at the {side} lung base",
                          f"{q}pleural-parenchymal scarring at the {side} apex",
                          f"chronic scarring in the {loc}"))  # fmt: skip
    if k == 5:
        curve = "dextro" if side == "right" else "levo"
        return pick(rng, (f"healed fracture of the {side} {pick(rng, _ORDINALS)} rib",
                          f"old {side} rib fractures", f"remote healed {side} clavicle fracture",
                          f"{mild} scoliosis of the thoracic spine",
                          f"{q}thoracic {curve}scoliosis"))  # fmt: skip
    if k == 6:
        return pick(rng, ("surgical clips in the right upper quadrant", "cholecystectomy clips are noted",
                          "surgical clips in the upper abdomen", f"surgical clips in the {side} axilla",
                          "postoperative changes in the upper abdomen",
                          f"surgical clips project over the {side} neck"))  # fmt: skip
    if k == 7:
        return pick(rng, (f"calcified {side} hilar lymph nodes", "calcified mediastinal lymph nodes",
                          f"{q}elevation of the {side} hemidiaphragm",
                          f"{mild} elevation of the {side} hemidiaphragm"))  # fmt: skip
    if k == 8:
        return pick(rng, (f"minimal {side} apical pleural thickening", "biapical pleural thickening",
                          f"{q}{side} apical pleural cap",
                          f"{mild} {side} apical pleural thickening"))  # fmt: skip
    return pick(rng, ("low lung volumes", "lung volumes are low",
                      "shallow inspiration limits evaluation of the lung bases",
                      "low lung volumes with bronchovascular crowding",
                      "patient rotation limits assessment of the mediastinum",
                      "hypoinflation with crowding of the bronchovascular markings"))  # fmt: skip


def device(rng: Rng) -> str:
    """One support-device clause: pacemaker, venous catheter, sternotomy, endotracheal tube,
    valve, loop recorder or enteric tube (with side, lead or tip position)."""
    side = pick(rng, SIDES)
    k = int(rng.integers(5))
    if k == 0:
        where = pick(rng, ("right atrium", "right ventricle", "right atrium and right ventricle"))
        leads = "dual-lead " if rng.random() < 0.5 else ""
        return f"{side} chest wall {leads}pacemaker with leads in the {where}"
    if k == 1:
        tip = pick(rng, ("the superior vena cava", "the cavoatrial junction", "the right atrium",
                         "the mid SVC"))  # fmt: skip
        kind = pick(rng, ("central venous catheter", "PICC line", "port catheter",
                          "internal jugular catheter"))  # fmt: skip
        return f"{side} {kind} with tip in {tip}"
    if k == 2:
        return pick(rng, ("median sternotomy wires are intact", "intact sternotomy wires",
                          "postsurgical changes of median sternotomy",
                          "sternotomy wires and mediastinal clips from prior bypass surgery"))  # fmt: skip
    if k == 3:
        return f"endotracheal tube tip {rng.uniform(2.0, 7.0):.1f} cm above the carina"
    return pick(rng, ("cardiac valve replacement is noted", "prosthetic aortic valve",
                      f"loop recorder over the {side} chest",
                      "enteric tube courses below the diaphragm"))  # fmt: skip
