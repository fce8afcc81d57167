"""Synthetic prompt text for a simulated request's token content.

A request's content (blis_gym.sim.engine.request.Content) is a chain of segments, each a key and
a token count: a prefix group's shared system prompt, the request's own question, and in a
multi-turn session the previous turns' prompts and outputs. Each segment becomes words drawn
from a list of common English words, seeded by the run's seed and the segment's key, one word
per token: BPE tokenizers (Llama, Qwen, GPT) split on spaces and hold each of these words, with
its leading space, as one token. So equal keys give equal text (a group's prefix is shared
textually and a real server's prefix cache sees it), and the token count is right to within the
template tokens a chat format adds. A previous turn's output is the text the server generated.
"""
from __future__ import annotations

import numpy as np

# common English words that are single tokens (with a leading space) in the usual BPE vocabularies
WORDS = np.array("""
the of and to in is that for it as was with be by on not he this are or his from at which but
have an had they you were their one all we can her has there been if more when will would who
so no she other its may these two them than some time into only out do any then about first
new very my also most over such our after made like many before must through back years where
much your way well down should because each just those people how too little state good make
world still own see men work long get here between both life being under never day same another
know while last might great old year off come since against go came right used take three
states himself few house use during without again place around however home small found thought
went say part once general high upon school every group number against system order water
city play left end book side might form until point government report water room mother area
money story fact month lot right study word business issue side kind head far black long both
little house yes after since long provide service around friend important father sit away until
power hour game often yet line political end among ever stand bad lose however member pay law
meet car city almost include continue set later community much name five once white least
president learn real change team minute best several idea kid body information nothing ago lead
social understand whether watch together follow around parent stop face anything create public
already speak others read level allow add office spend door health person art sure such war
history party within grow result open change morning walk reason low win research girl guy early
food before moment himself air teacher force offer enough both education across although
remember foot second boy maybe toward able age off policy everything love process music
including consider appear actually buy probably human wait serve market die send expect home
sense build stay fall oh nation plan cut college interest death course someone experience behind
reach local kill six remain effect use yeah suggest class control raise care perhaps little late
hard field else pass former sell major sometimes require along development themselves report
role better economic effort up decide rate strong possible heart drug show leader light voice
wife police mind finally pull return free military price less according decision explain son
hope even develop view relationship carry town road drive arm true federal break better
difference thank receive value international building action full model join season society
because tax director early position player agree especially record pick wear paper special
space ground form support event official whose matter everyone center couple site project hit
base activity star table need court produce eat american oil half situation easy cost industry
figure street image itself phone either data cover quite picture clear practice piece land
recent describe product doctor wall patient worker news test movie certain north love personal
open support simply third technology catch step baby computer type attention draw film tree
source red nearly organization choose cause hair look point century evidence window difficult
listen soon culture billion chance brother energy period course summer realize hundred available
plant likely opportunity term short letter condition choice place single rule daughter
administration south husband floor campaign material population well call economy medical
hospital church close thousand risk current fire future wrong involve defense anyone increase
security bank myself certainly west sport board seek per subject officer private rest behavior
deal performance fight throw top quickly past goal second bed order author fill represent focus
foreign drop plan blood upon agency push nature color no recently store reduce sound note fine
before near movement page enter share than common poor other natural race concern series
significant similar hot language each usually response dead rise animal factor decade article
shoot east save seven artist away scene stock career despite central eight thus treatment beyond
happy exactly protect approach lie size dog fund serious occur media ready sign thought list
individual simple quality pressure accept answer resource identify left meeting determine prepare
disease whatever success argue cup particularly amount ability staff recognize indicate
character growth loss degree wonder attack herself region television box training pretty trade
deal election everybody physical lay general feeling standard bill message fail outside arrive
analysis benefit name sex forward lawyer present section environmental glass answer skill
sister professor operation financial crime stage ok compare authority miss design sort one act
ten knowledge gun station blue state strategy clearly discuss indeed force truth song example
democratic check environment leg dark public various rather laugh guess executive set study
prove hang entire rock design enough forget since claim note remove manager help close sound
enjoy network legal religious cold form final main science green memory card above seat cell
establish nice trial expert that spring firm radio visit management care avoid imagine
tonight huge ball no close finish yourself talk theory impact respond statement maintain charge
popular traditional onto reveal direction weapon employee cultural contain peace head control
base pain apply play measure wide shake fly interview manage chair fish particular camera
structure politics perform bit weight suddenly discover candidate top production treat trip
evening affect inside conference unit best style adult worry range mention rather far deep
front edge individual specific writer trouble necessary throughout challenge fear shoulder
institution middle sea dream bar beautiful property instead improve stuff
""".split())


def segment_text(seed: int, key: int, tokens: int) -> str:
    """`tokens` words, the same for the same (seed, key) in any process."""
    if tokens <= 0:
        return ""
    rng = np.random.default_rng([int(seed) % (1 << 63), int(key) % (1 << 64)])
    return " ".join(WORDS[rng.integers(0, len(WORDS), tokens)].tolist())


class PromptText:
    """Renders contents as text; remembers the text of shared prefixes and, for multi-turn
    sessions, the outputs the server generated (a later turn's prompt repeats them)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._shared: dict = {}                  # shared Content -> its text (group prefixes)
        self.outputs: dict[int, str] = {}        # segment key of a request's output -> generated text

    def render(self, content) -> str:
        if content is None:
            return ""
        if content.shared:
            text = self._shared.get(content)
            if text is None:
                text = self._shared[content] = self._compose(content)
            return text
        return self._compose(content)

    def _compose(self, content) -> str:
        parts = [self.render(content.parent)] if content.parent is not None else []
        for key, n in content.segments:
            text = self.outputs.get(key)
            parts.append(text if text is not None else segment_text(self.seed, key, n))
        return " ".join(p for p in parts if p)
