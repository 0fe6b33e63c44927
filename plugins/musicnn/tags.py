"""The tag vocabularies of the two musicnn training sets, in the order of the model's outputs.

Copied from ``musicnn/configuration.py`` (musicnn 0.1.0); the order is the output order of the
last dense layer, so it must never be sorted or edited.
"""

MTT_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip

MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill",
    "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental",
    "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy",
    "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop",
    "sad", "House", "happy",
)  # fmt: skip

TAGS_BY_DATASET: dict[str, tuple[str, ...]] = {"MSD": MSD_TAGS, "MTT": MTT_TAGS}

# the tags that name a genre: a track's likeliest one labels it on maps
GENRE_TAGS: frozenset[str] = frozenset({
    "rock", "pop", "alternative", "indie", "electronic", "dance", "alternative rock", "jazz",
    "metal", "classic rock", "soul", "indie rock", "electronica", "folk", "punk", "blues",
    "hard rock", "ambient", "experimental", "Hip-Hop", "country", "easy listening", "funk",
    "electro", "heavy metal", "Progressive rock", "rnb", "indie pop", "House",
    "classical", "techno", "indian", "opera", "new age",
})  # fmt: skip
