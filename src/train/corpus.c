/* The synthetic corpus (corpus.h has the mixture). Word lists and templates are data at the
 * top; each document kind is one function writing into a growing buffer. Randomness is
 * drawn only through lp_rng_uniform, so the text depends on nothing but the spec. */
#include "loupe/corpus.h"

#include "loupe/error.h"
#include "loupe/generate.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *const NAMES[] = {
    "Mary",    "John",   "Tom",     "James",  "Michael", "David",  "Robert",  "William", "Richard", "Joseph",
    "Thomas",  "Charles", "Daniel", "Matthew", "Anthony", "Mark",  "Paul",    "Steven",  "Andrew",  "Kevin",
    "Brian",   "George", "Edward",  "Ryan",   "Jason",   "Jacob",  "Gary",    "Eric",    "Adam",    "Peter",
    "Kyle",    "Sam",    "Ben",     "Alex",   "Max",     "Jack",   "Henry",   "Luke",    "Scott",   "Frank",
    "Jeff",    "Mike",   "Dan",     "Tim",    "Joe",     "Bill",   "Bob",     "Jim",     "Ray",     "Carl",
    "Roger",   "Martin", "Jerry",   "Dean",   "Sean",    "Tony",   "Greg",    "Victor",  "Patrick", "Jesse",
    "Sarah",   "Lisa",   "Anna",    "Emma",   "Kate",    "Laura",  "Amy",     "Linda",   "Susan",   "Karen",
    "Nancy",   "Betty",  "Helen",   "Sandra", "Donna",   "Ruth",   "Sharon",  "Michelle", "Rachel", "Alice",
    "Jane",    "Julie",  "Grace",   "Rose",   "Lucy",    "Sophie", "Claire",  "Diana",   "Kelly",   "Emily",
    "Jessica", "Jennifer", "Elizabeth", "Maria", "Nicole", "Amanda", "Melissa", "Rebecca", "Hannah", "Olivia",
};

static const char *const PLACES[] = {
    "store",   "park",     "school",  "station", "hospital", "restaurant", "garden", "house",   "office",
    "beach",   "library",  "market",  "museum",  "river",    "lake",       "forest", "farm",    "church",
    "zoo",     "hotel",    "airport", "bank",    "cafe",     "gym",        "theater", "mall",   "bakery",
    "kitchen", "street",   "village", "city",    "mountain", "field",      "bridge", "castle",  "island",
    "harbor",  "shop",     "playground", "pool", "stadium",  "cinema",     "university", "factory", "camp",
    "palace",  "square",   "hill",    "valley",  "temple",
};

/* all start with a consonant: the templates say "a OBJECT" */
static const char *const OBJECTS[] = {
    "drink",  "book",     "ball",   "cake",    "bottle", "kiss",     "ring",   "letter",  "pen",    "hat",
    "box",    "cup",      "toy",    "flower",  "basket", "bag",      "key",    "coin",    "snack",  "gift",
    "phone",  "computer", "lamp",   "candle",  "clock",  "chair",    "shirt",  "necklace", "watch", "map",
    "ticket", "note",     "cookie", "sandwich", "pencil", "brush",   "hammer", "kite",    "doll",   "guitar",
    "picture", "card",    "plate",  "spoon",   "towel",  "blanket",  "scarf",  "bicycle", "camera", "bowl",
};

/* IOI stories for training, built from parts: a form (the clause order) whose slots draw
 * from the lists below ({1} and {2} are the intro's names, {S} the subject; any other
 * letter draws from the grammar's list of that letter, TRAINING below, and what it draws
 * may hold slots itself). Varied so that nothing but the names' roles predicts the answer:
 * openings, activities, sentences in between, verbs and objects change from story to story. */
static const char *const TR_FORMS[] = {
    "{W} {1} and {2} {a}, {c}",                 /* "When Mary and John went to the store, John gave a drink to" */
    "{b}{1} and {2} {a}. {m}{t}",               /* two sentences, maybe more in between */
    "While {1} and {2} were {p}, {c}",
    "The {P} was {D} when {1} and {2} {r}. {m}{t}",
    "{f}{1} and {2} {o}. {m}{S} {i}",           /* "Friends Mary and John found a cake at the park. John gave it to" */
    "{W} {1} and {2} {o}, {S} {i}",
};
static const char *const TR_SUBORDINATORS[] = {"When", "After", "As", "Once", "As soon as", "Right after", "Since"};
static const char *const TR_OPENERS[] = {"",          "",       "Then, ",         "Then ",        "One day, ",
                                         "Afterwards, ", "Later, ", "In the morning, ", "That day, ", "Today "};
static const char *const TR_ACTS[] = {
    "went to the {P}",           "walked to the {P}",       "arrived at the {P}",
    "met at the {P}",            "were at the {P}",         "had lunch at the {P}",
    "played at the {P}",         "had a long talk at the {P}", "spent the day at the {P}",
    "waited at the {P}",         "ran to the {P}",          "stayed at the {P}",
    "had a lot of fun at the {P}", "were thinking about going to the {P}", "got back from the {P}",
    "visited the {P}",           "left the {P}",            "were working at the {P}",
    "worked at the {P}",         "went for a walk in the {P}",
};
static const char *const TR_DOING[] = {"working at the {P}", "walking to the {P}", "sitting in the {P}",
                                       "waiting at the {P}", "playing near the {P}", "talking at the {P}"};
static const char *const TR_PLACE_ADJS[] = {"busy", "quiet", "empty", "crowded", "cold", "warm", "noisy"};
static const char *const TR_ARRIVED[] = {"arrived", "got there", "walked in", "came in"};
static const char *const TR_FOUND_OPENERS[] = {"", "Friends ", "Then, ", "One day, "};
static const char *const TR_FOUND[] = {"found a {O} at the {P}", "got a {O} at the {P}", "bought a {O} at the {P}",
                                       "saw a {O} near the {P}", "made a {O} at the {P}"};
static const char *const TR_GIVE_IT[] = {"gave it to",    "handed it to",           "decided to give it to",
                                         "passed it to",  "wanted to show it to",   "brought it to", "sent it to"};
/* sentences between the intro and the action: none, one or two, never naming anyone */
static const char *const TR_MIDDLE[] = {"", "", "", "It was a {y} day. ", "They talked for a while. ",
                                        "The {P} was {D}. ", "They were {F}. ", "It was a {y} day. They were {F}. ",
                                        "Everyone was {F}. ", "They looked at the {O} together. ",
                                        "They sat down. The {P} was {D}. "};
static const char *const TR_CLAUSE_ACTIONS[] = {"{S} {g}", "{S} {g}", "then {S} {g}", "{S} soon {g}", "{S} quickly {g}"};
static const char *const TR_ACTIONS[] = {"{S} {g}",       "{S} {g}",           "Then {S} {g}",  "Later, {S} {g}",
                                         "After a while, {S} {g}", "Soon {S} {g}", "In the end, {S} {g}",
                                         "At last, {S} {g}", "Then, {S} {g}",   "Afterwards, {S} {g}"};
static const char *const TR_GIVE[] = {"{V} {q} to", "{V} {q} to", "{V} {q} to", "{M} {v} {q} to", "{T} to"};
static const char *const TR_VERBS[] = {"gave", "gave", "handed", "passed", "brought", "sent", "showed", "offered", "tossed"};
static const char *const TR_MODALS[] = {"wanted to", "decided to", "tried to",   "had to",
                                        "was going to", "agreed to", "promised to", "needed to"};
static const char *const TR_VERBS_BASE[] = {"give", "hand", "pass", "bring", "send", "show", "offer", "toss"};
static const char *const TR_OBJECT_PHRASES[] = {"a {O}", "the {O}", "a {J} {O}", "the {J} {O}", "a {K}", "the {K}"};
/* more things to give, from the span words: the object should not matter */
static const char *const TR_MORE_OBJECTS[] = {"paper", "window", "bread", "stone", "lemon", "jacket", "mirror",
                                              "kettle", "ladder", "needle", "pepper", "rabbit", "saddle", "wagon",
                                              "marble", "puzzle", "rocket", "feather", "kitten", "walnut"};
static const char *const TR_OBJECT_ADJS[] = {"small", "big", "red", "new", "old", "nice", "little", "blue"};
static const char *const TR_TALK[] = {"said goodbye", "said hello",      "waved",       "talked",
                                      "wrote a letter", "read a story",  "sang a song", "explained the plan",
                                      "sent a message", "gave a speech"};

/* ---------------------------------------------------------------- held-out frames
 *
 * IOI stories that training never sees, to measure whether the circuit generalises beyond
 * the frames it was trained on. A frame is a form (the clause order, with its slots) filled
 * from the lists below; every form has at least one slot filled from held-out words, and
 * every action uses a verb training never generates. Their words are the model's: filler
 * sentences use them ("Tom threw the vase yesterday."), but no training story does, and no
 * held-out action occurs in the training corpus (tests/test_corpus.c checks). Slots as in
 * training's forms above. */
static const char *const HO_FORMS[] = {
    "{b}{1} and {2} {a}. {S} {g}",                /* the training order, with new words */
    "{1} and {2} {a}, and then {S} {g}",          /* coordinated clauses */
    "Before {1} and {2} {a}, {S} {g}",            /* a new subordinator */
    "At the {P} {t}, {1} and {2} {z}. {m}{S} {g}", /* the place first */
    "{1} and {2} {a}. {m}{l} {S} {g}",            /* new sentences in between */
    "Because {1} and {2} {a}, {S} {g}",
    "It was {d} when {1} and {2} {a}. {S} {g}",
    "{b}{1} and {2} {a}. {S} {e} and {g}",        /* the subject does something first */
};
static const char *const HO_OPENERS[] = {"", "Yesterday ", "On Sunday, ", "Last night ", "This morning, ",
                                         "Early one day, "};
static const char *const HO_ACTS[] = {
    "had a long day at the {P}", "drove to the {P}",        "danced at the {P}", "ate dinner at the {P}",
    "looked around the {P}",     "shopped at the {P}",      "rested near the {P}", "came home from the {P}",
};
static const char *const HO_ACTS_HERE[] = {"ate dinner", "danced all night", "rested for an hour", "looked around"};
static const char *const HO_WHEN[] = {"yesterday", "last week", "on Sunday"};
static const char *const HO_MIDDLE[] = {"", "Nobody else was there. ", "The music was loud. ",
                                        "The weather was nice. Nobody else was there. "};
static const char *const HO_LATER[] = {"Eventually,", "Before long,", "After dinner,", "Finally"};
static const char *const HO_DARK[] = {"late", "early", "dark outside", "almost noon"};
static const char *const HO_FIRST[] = {"stood up", "laughed", "opened a window", "looked outside"};
static const char *const HO_GIVE[] = {"{v} {o} to", "{v} {o} to", "chose to {w} {o} to", "was about to {w} {o} to",
                                      "told a joke to", "whispered a secret to", "read a poem to"};
static const char *const HO_VERBS[] = {"threw", "sold", "lent", "mailed", "returned", "delivered", "slid"};
static const char *const HO_VERBS_BASE[] = {"throw", "sell", "lend", "mail", "return", "deliver"};
static const char *const HO_OBJECT_PHRASES[] = {"a {O}", "the {O}", "a heavy {O}"};
static const char *const HO_PLACES[] = {"party", "concert", "fair", "festival", "wedding", "parade", "picnic"};
static const char *const HO_OBJECTS[] = {"present", "jar", "rope", "shoe", "pie", "sweater", "vase", "parcel", "pillow"};

typedef struct {
    const char *const *w;
    size_t n;
} wlist;
#define WL(list) {(list), N_OF(list)}

/* A grammar of IOI stories: its forms, and a list of words for each slot letter. */
typedef struct {
    wlist forms;
    wlist slot[128];
} ioi_grammar;

static const ioi_grammar HELDOUT = {
    .forms = WL(HO_FORMS),
    .slot =
        {
            ['b'] = WL(HO_OPENERS), ['a'] = WL(HO_ACTS),     ['z'] = WL(HO_ACTS_HERE), ['t'] = WL(HO_WHEN),
            ['m'] = WL(HO_MIDDLE),  ['l'] = WL(HO_LATER),    ['d'] = WL(HO_DARK),      ['e'] = WL(HO_FIRST),
            ['g'] = WL(HO_GIVE),    ['v'] = WL(HO_VERBS),    ['w'] = WL(HO_VERBS_BASE), ['o'] = WL(HO_OBJECT_PHRASES),
            ['P'] = WL(HO_PLACES),  ['O'] = WL(HO_OBJECTS),
        },
};

static const char *const SPAN_WORDS[] = {
    "apple",  "river",  "green",  "stone",  "quick",  "light",  "music",  "paper",  "window", "silver",
    "yellow", "bread",  "cloud",  "dream",  "earth",  "family", "glass",  "heart",  "island", "jacket",
    "lemon",  "money",  "night",  "ocean",  "pencil", "queen",  "rain",   "summer", "table",  "uncle",
    "voice",  "water",  "young",  "zebra",  "anchor", "butter", "corner", "desert", "engine", "forest",
    "garden", "hollow", "iron",   "jungle", "kettle", "ladder", "mirror", "needle", "orange", "pepper",
    "rabbit", "saddle", "tiger",  "velvet", "wagon",  "winter", "yard",   "copper", "candle", "dinner",
    "feather", "ginger", "hammer", "insect", "jelly", "kitten", "lizard", "marble", "nickel", "oyster",
    "puzzle", "rocket", "sugar",  "thunder", "violet", "walnut", "basket", "cactus", "dragon", "falcon",
    "blue",   "red",    "small",  "large",  "old",    "new",    "happy",  "cold",   "warm",   "dark",
    "run",    "jump",   "sing",   "read",   "write",  "swim",   "climb",  "build",  "paint",  "count",
};

static const char *const SUBJECT_NOUNS[] = {
    "dog", "cat", "little girl", "small boy", "old man", "old woman", "teacher", "farmer", "bird", "baby",
    "king", "doctor", "rabbit", "fox", "girl", "boy",
};
static const char *const DAY_ADJS[] = {"sunny", "rainy", "cold", "warm", "bright", "quiet", "windy", "long", "busy"};
static const char *const FEELINGS[] = {"happy", "sad", "tired", "hungry", "excited", "sleepy", "scared", "proud",
                                       "calm", "curious"};
static const char *const TIMES[] = {"One day", "In the morning", "After lunch", "Later", "At night",
                                    "That evening", "Soon"};

static const ioi_grammar TRAINING = {
    .forms = WL(TR_FORMS),
    .slot =
        {
            ['W'] = WL(TR_SUBORDINATORS), ['b'] = WL(TR_OPENERS),      ['a'] = WL(TR_ACTS),
            ['p'] = WL(TR_DOING),         ['D'] = WL(TR_PLACE_ADJS),   ['r'] = WL(TR_ARRIVED),
            ['f'] = WL(TR_FOUND_OPENERS), ['o'] = WL(TR_FOUND),        ['i'] = WL(TR_GIVE_IT),
            ['m'] = WL(TR_MIDDLE),        ['c'] = WL(TR_CLAUSE_ACTIONS), ['t'] = WL(TR_ACTIONS),
            ['g'] = WL(TR_GIVE),          ['V'] = WL(TR_VERBS),        ['M'] = WL(TR_MODALS),
            ['v'] = WL(TR_VERBS_BASE),    ['q'] = WL(TR_OBJECT_PHRASES), ['J'] = WL(TR_OBJECT_ADJS),
            ['T'] = WL(TR_TALK),          ['y'] = WL(DAY_ADJS),        ['F'] = WL(FEELINGS),
            ['K'] = WL(TR_MORE_OBJECTS),
            ['P'] = WL(PLACES),           ['O'] = WL(OBJECTS),
        },
};

/* Scrambled stories: the same roles (two names joined by "and", the subject again, "to",
 * the other name) in frames that carry no signal: the words around and between the names
 * are drawn at random from SOUP (the span words and a few small words, none of the held-out
 * frames') or from the training grammar's parts, in random numbers, with or without
 * punctuation. Only the names' roles predict the answer, so the circuit cannot lean on the
 * words next to a name or on where the clauses break. */
static const char *const SOUP_SMALL[] = {"the", "a", "was", "then", "it", "at", "in", "with", "very", "soon",
                                         "they", "there", "of", "on", "for", "so", "all", "is", "not", "that"};
static const char *const SOUP_BREAKS[] = {".", ",", ""};

/* Filler sentences: {S}/{s} a subject (capitalised / not), {N} a name, {P} {O} as above,
 * {A} a day adjective, {F} a feeling, {T} a time phrase; {h} {j} {v} {w} a held-out place,
 * object, verb and its base form. */
static const char *const FILLER[] = {
    "{S} ran to the {P}.",
    "{S} walked to the {P} with {N}.",
    "{S} found a {O} near the {P}.",
    "It was a {A} day.",
    "{N} liked the {O} very much.",
    "{S} was very {F}.",
    "{S} and {N} played at the {P}.",
    "Then everyone went home.",
    "The {P} was {A} and quiet.",
    "{N} said, \"I want a {O}.\"",
    "{T}, {s} looked at the {O}.",
    "{S} saw a {O} at the {P}.",
    "Later, {s} gave the {O} to {N}.",
    "{S} sat down and smiled.",
    "{T}, {N} felt {F}.",
    "There was a big {O} in the {P}.",
    /* the held-out frames' words, never in a story: the model knows them, not those frames */
    "{S} {v} the {j} yesterday.",
    "{N} {v} a heavy {j}.",
    "Finally {s} {v} the old {j}.",
    "{S} chose to {w} the {j}.",
    "{N} was about to {w} a {j}.",
    "There was a {h} at the {P}.",
    "{S} went to the {h} last week.",
    "The {h} was fun on Sunday.",
    "{S} had a long day at the {h}.",
    "{N} drove to the {h}.",
    "Yesterday {s} danced all night.",
    "This morning, {s} ate dinner early.",
    "Last night {s} shopped at the {P}.",
    "{N} rested near the {P} for an hour.",
    "Early one day, {s} looked around the {h}.",
    "Eventually, {s} came home from the {h}.",
    "Nobody else was there.",
    "The music was loud.",
    "The weather was nice.",
    "Before long, {s} stood up and laughed.",
    "After dinner, {s} opened a window.",
    "It was almost noon when {s} looked outside.",
    "It was late and dark outside.",
    "{N} told a joke.",
    "{N} whispered a secret.",
    "{N} read a poem.",
    "Because it was early, {s} was {F}.",
    "Before {s} went home, it was dark outside.",
    "{S} stood up, and then {s} laughed.",
};

/* ---------------------------------------------------------------- output buffer */

typedef struct {
    char *s;
    size_t n, cap;
    bool fixed; /* s is the caller's array of cap bytes: running out is an error, not a realloc */
    bool oom;
} obuf;

/* Appends s[0..n), which may lie inside b itself. */
static void put(obuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        if (b->fixed) { b->oom = true; return; }
        bool inside = b->s && s >= b->s && s < b->s + b->n;
        size_t at = inside ? (size_t)(s - b->s) : 0;
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) { b->oom = true; return; }
        b->s = p, b->cap = cap;
        if (inside) s = p + at;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void puts_(obuf *b, const char *s) { put(b, s, strlen(s)); }

/* ---------------------------------------------------------------- drawing */

static size_t pick(lp_rng *r, size_t n) {
    size_t i = (size_t)(lp_rng_uniform(r) * (double)n);
    return i < n ? i : n - 1;
}

#define PICK(r, list) ((list)[pick((r), N_OF(list))])

static bool chance(lp_rng *r, double p) { return lp_rng_uniform(r) < p; }

typedef struct {
    const char *io, *s;
    bool abba; /* the intro names the IO first */
} ioi_names;

/* Writes t with its slots filled from g (recursively: a drawn phrase may have slots). */
static void expand(lp_rng *r, obuf *b, const ioi_grammar *g, const char *t, const ioi_names *nm, int depth) {
    assert(depth < 8);
    for (; *t; t++) {
        if (t[0] != '{' || !t[1] || t[2] != '}') { put(b, t, 1); continue; }
        char c = t[1];
        t += 2;
        switch (c) {
        case '1': puts_(b, nm->abba ? nm->io : nm->s); break;
        case '2': puts_(b, nm->abba ? nm->s : nm->io); break;
        case 'S': puts_(b, nm->s); break;
        default: {
            const wlist *l = &g->slot[(unsigned char)c];
            assert(l->n && "a slot with no list");
            expand(r, b, g, l->w[pick(r, l->n)], nm, depth + 1);
        }
        }
    }
}

/* Two different names: the indirect object and the subject. */
static void pick_names(lp_rng *r, const char **io, const char **s) {
    size_t i = pick(r, N_OF(NAMES)), j = pick(r, N_OF(NAMES) - 1);
    if (j >= i) j++;
    *io = NAMES[i], *s = NAMES[j];
}

/* Writes one story of g up to (not including) the answer; returns its form. */
static int grammar_story(lp_rng *r, obuf *b, const ioi_grammar *g, bool abba, const char **io, const char **s) {
    int form = (int)pick(r, g->forms.n);
    ioi_names nm = {.abba = abba};
    pick_names(r, &nm.io, &nm.s);
    expand(r, b, g, g->forms.w[form], &nm, 0);
    *io = nm.io, *s = nm.s;
    return form;
}

/* lo..hi words of soup, each after a space (the first too when lead). */
static void soup(lp_rng *r, obuf *b, int lo, int hi, bool lead) {
    int n = lo + (int)pick(r, (size_t)(hi - lo + 1));
    for (int i = 0; i < n; i++) {
        if (i || lead) put(b, " ", 1);
        puts_(b, chance(r, 0.3) ? PICK(r, SOUP_SMALL) : PICK(r, SPAN_WORDS));
    }
}

/* One scrambled story (above) up to the answer: an opening, "{1} and {2}", what they did,
 * zero to two breaks with words after them, a break, maybe words, the subject, and what the
 * subject did to someone, ending in " to". */
static void scrambled_story(lp_rng *r, obuf *b, bool abba, const char **io, const char **s) {
    ioi_names nm = {.abba = abba};
    pick_names(r, &nm.io, &nm.s);
    switch (pick(r, 4)) {
    case 0: break;
    case 1: expand(r, b, &TRAINING, "{W} ", &nm, 0); break;
    case 2: expand(r, b, &TRAINING, "{b}", &nm, 0); break;
    default: soup(r, b, 1, 3, false), put(b, " ", 1); break;
    }
    expand(r, b, &TRAINING, "{1} and {2}", &nm, 0);
    if (chance(r, 0.5)) expand(r, b, &TRAINING, " {a}", &nm, 0);
    else soup(r, b, 1, 5, true);
    for (int k = (int)pick(r, 3); k > 0; k--) {
        puts_(b, PICK(r, SOUP_BREAKS));
        soup(r, b, 1, 5, true);
    }
    puts_(b, PICK(r, SOUP_BREAKS));
    soup(r, b, 0, 2, true);
    put(b, " ", 1);
    puts_(b, nm.s);
    switch (pick(r, 3)) {
    case 0: expand(r, b, &TRAINING, " {g}", &nm, 0); break;
    case 1: soup(r, b, 1, 4, true), puts_(b, " to"); break;
    default: soup(r, b, 1, 3, true), expand(r, b, &TRAINING, " and {g}", &nm, 0); break;
    }
    *io = nm.io, *s = nm.s;
}

static void filler_sentence(lp_rng *r, obuf *b) {
    const char *t = PICK(r, FILLER);
    for (; *t; t++) {
        if (t[0] != '{' || !t[1] || t[2] != '}') { put(b, t, 1); continue; }
        char c = t[1];
        t += 2;
        switch (c) {
        case 'S':
        case 's':
            if (chance(r, 0.5)) {
                puts_(b, PICK(r, NAMES));
            } else {
                puts_(b, c == 'S' ? "The " : "the ");
                puts_(b, PICK(r, SUBJECT_NOUNS));
            }
            break;
        case 'N': puts_(b, PICK(r, NAMES)); break;
        case 'P': puts_(b, PICK(r, PLACES)); break;
        case 'O': puts_(b, PICK(r, OBJECTS)); break;
        case 'A': puts_(b, PICK(r, DAY_ADJS)); break;
        case 'F': puts_(b, PICK(r, FEELINGS)); break;
        case 'T': puts_(b, PICK(r, TIMES)); break;
        case 'h': puts_(b, PICK(r, HO_PLACES)); break;
        case 'j': puts_(b, PICK(r, HO_OBJECTS)); break;
        case 'v': puts_(b, PICK(r, HO_VERBS)); break;
        case 'w': puts_(b, PICK(r, HO_VERBS_BASE)); break;
        default: assert(!"unknown filler slot");
        }
    }
}

/* Up to max sentences, each with probability p, each followed by a space. */
static void filler_prefix(lp_rng *r, obuf *b, int max, double p) {
    for (int i = 0; i < max; i++)
        if (chance(r, p)) {
            filler_sentence(r, b);
            put(b, " ", 1);
        }
}

static void doc_ioi(lp_rng *r, obuf *b, const lp_corpus_spec *sp, lp_corpus_doc *d) {
    filler_prefix(r, b, 2, 0.3);
    d->story_off = b->n;
    const char *io, *s;
    /* no draw when there are none: a spec without scrambled stories gives the text it gave before them */
    if (sp->scrambled > 0 && chance(r, sp->scrambled)) scrambled_story(r, b, chance(r, 0.5), &io, &s);
    else grammar_story(r, b, &TRAINING, chance(r, 0.5), &io, &s);
    d->answer_off = b->n;
    put(b, " ", 1);
    puts_(b, io);
    d->answer_len = b->n - d->answer_off;
    put(b, ".", 1);
    if (chance(r, 0.3)) {
        put(b, " ", 1);
        filler_sentence(r, b);
    }
}

static void doc_repeat(lp_rng *r, obuf *b, const lp_corpus_spec *sp, lp_corpus_doc *d) {
    filler_prefix(r, b, 2, 0.5);
    int n = sp->span_min + (int)pick(r, (size_t)(sp->span_max - sp->span_min + 1));
    bool letters = chance(r, sp->letter_words);
    d->span_off = b->n;
    for (int i = 0; i < n; i++) {
        if (i) put(b, " ", 1);
        if (letters) {
            int k = 2 + (int)pick(r, 6);
            for (int c = 0; c < k; c++) {
                char ch = (char)('a' + pick(r, 26));
                put(b, &ch, 1);
            }
        } else {
            puts_(b, PICK(r, SPAN_WORDS));
        }
    }
    d->span_len = b->n - d->span_off;
    if (chance(r, 0.5)) {
        put(b, ". ", 2);
        filler_sentence(r, b);
    }
    put(b, " ", 1);
    d->repeat_off = b->n;
    if (!b->oom) put(b, b->s + d->span_off, d->span_len);
    put(b, ".", 1);
}

static void doc_filler(lp_rng *r, obuf *b) {
    int n = 3 + (int)pick(r, 6);
    for (int i = 0; i < n; i++) {
        if (i) put(b, " ", 1);
        filler_sentence(r, b);
    }
}

/* ---------------------------------------------------------------- public */

void lp_corpus_spec_default(lp_corpus_spec *spec) {
    *spec = (lp_corpus_spec){
        .seed = 0,
        .proportion = {0.4, 0.3, 0.3},
        .n_bytes = 1 << 20,
        .span_min = 4,
        .span_max = 12,
        .letter_words = 0.5,
    };
}

int lp_corpus_n_forms(lp_ioi_frames frames) {
    return (int)(frames == LP_IOI_HELDOUT ? HELDOUT : TRAINING).forms.n;
}

const char *const *lp_corpus_names(int *n) {
    *n = (int)N_OF(NAMES);
    return NAMES;
}

int lp_corpus_new(const lp_corpus_spec *sp, char **text, size_t *len, lp_corpus_doc **docs, size_t *n_docs) {
    assert(sp && text && len && (!docs || n_docs));
    *text = NULL, *len = 0;
    if (docs) *docs = NULL, *n_docs = 0;
    double total = 0;
    for (int k = 0; k < LP_CORPUS_N_KINDS; k++) {
        if (!(sp->proportion[k] >= 0))
            return lp_error(LP_EINVAL, "corpus: proportion %d is %g; proportions must be >= 0", k, sp->proportion[k]);
        total += sp->proportion[k];
    }
    if (!(total > 0)) return lp_error(LP_EINVAL, "corpus: the proportions add up to 0");
    if (sp->n_docs == 0 && sp->n_bytes == 0) return lp_error(LP_EINVAL, "corpus: give a number of documents or bytes");
    if (sp->span_min < 1 || sp->span_max < sp->span_min || sp->span_max > 64)
        return lp_error(LP_EINVAL, "corpus: span of %d..%d words; need 1 <= min <= max <= 64", sp->span_min,
                        sp->span_max);
    if (!(sp->letter_words >= 0 && sp->letter_words <= 1))
        return lp_error(LP_EINVAL, "corpus: letter_words %g is not in [0, 1]", sp->letter_words);
    if (!(sp->scrambled >= 0 && sp->scrambled <= 1))
        return lp_error(LP_EINVAL, "corpus: scrambled %g is not in [0, 1]", sp->scrambled);

    lp_rng rng;
    lp_rng_seed(&rng, sp->seed);
    obuf b = {0};
    lp_corpus_doc *index = NULL;
    size_t n = 0, cap = 0;
    while (sp->n_docs ? n < sp->n_docs : b.n < sp->n_bytes) {
        double u = lp_rng_uniform(&rng) * total, acc = 0;
        lp_corpus_kind kind = LP_CORPUS_FILLER;
        for (int k = 0; k < LP_CORPUS_N_KINDS; k++) {
            acc += sp->proportion[k];
            if (u < acc && sp->proportion[k] > 0) { kind = (lp_corpus_kind)k; break; }
        }
        lp_corpus_doc d = {.kind = kind, .off = b.n};
        switch (kind) {
        case LP_CORPUS_IOI: doc_ioi(&rng, &b, sp, &d); break;
        case LP_CORPUS_REPEAT: doc_repeat(&rng, &b, sp, &d); break;
        default: doc_filler(&rng, &b); break;
        }
        d.len = b.n - d.off;
        puts_(&b, LP_CORPUS_EOT);
        if (docs && !b.oom) {
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                lp_corpus_doc *p = realloc(index, cap * sizeof *p);
                if (!p) b.oom = true;
                else index = p;
            }
            if (!b.oom) index[n] = d;
        }
        if (b.oom) break;
        n++;
    }
    if (b.oom) {
        free(b.s);
        free(index);
        return lp_error(LP_ENOMEM, "corpus: out of memory after %zu documents", n);
    }
    *text = b.s, *len = b.n;
    if (docs) *docs = index, *n_docs = n;
    return LP_OK;
}

static void copy_name(char *dst, size_t cap, const char *name) { snprintf(dst, cap, " %s", name); }

void lp_corpus_ioi_prompts(uint64_t seed, lp_ioi_frames frames, int n, lp_ioi_prompt *out) {
    assert(n >= 0 && (out || n == 0));
    lp_rng rng; /* a stream of its own: not the corpus's for this seed */
    lp_rng_seed(&rng, seed ^ (frames == LP_IOI_HELDOUT ? 0x4E1D057ull : 0x10157E57D0C5ull));
    for (int i = 0; i < n; i++) {
        lp_ioi_prompt *p = &out[i];
        *p = (lp_ioi_prompt){0}; /* whole structs compare equal for equal seeds */
        obuf b = {.s = p->prompt, .cap = sizeof p->prompt, .fixed = true};
        const char *io, *s;
        p->abba = i % 2 == 0;
        p->form = grammar_story(&rng, &b, frames == LP_IOI_HELDOUT ? &HELDOUT : &TRAINING, p->abba, &io, &s);
        assert(!b.oom); /* the longest story fits with room to spare */
        copy_name(p->io, sizeof p->io, io);
        copy_name(p->subject, sizeof p->subject, s);
    }
}

/* ---------------------------------------------------------------- polarity */

/* The lexicon: adjectives of the corpus's lists (DAY_ADJS, FEELINGS, TR_PLACE_ADJS), split by
 * what they say of a day, a place or a person. */
static const char *const POSITIVE[] = {"happy", "nice", "fun", "sunny", "bright", "warm", "calm", "proud", "excited"};
static const char *const NEGATIVE[] = {"sad", "tired", "scared", "hungry", "cold", "rainy", "dark", "noisy", "crowded"};
static const char *const NEUTRAL[] = {"{N} went to the {P}.", "{N} and {N} met at the {P}.", "It was {T}.",
                                      "{N} found a {O}.", "Then everyone went home."};
static const char *const NEUTRAL_TIMES[] = {"late", "early", "almost noon", "sunday"};

/* "the park was not nice": a subject, then the adjective of polarity positive xor negated. */
static void polarity_clause(lp_rng *r, obuf *b, bool positive, bool negated) {
    switch (pick(r, 4)) {
    case 0: puts_(b, PICK(r, NAMES)); break;
    case 1: puts_(b, "the "), puts_(b, PICK(r, PLACES)); break;
    case 2: puts_(b, "the "), puts_(b, PICK(r, OBJECTS)); break;
    default: puts_(b, "the "), puts_(b, PICK(r, SUBJECT_NOUNS)); break;
    }
    puts_(b, negated ? " was not " : " was ");
    if (chance(r, 0.2)) puts_(b, "very ");
    puts_(b, positive != negated ? PICK(r, POSITIVE) : PICK(r, NEGATIVE));
}

static void neutral_sentence(lp_rng *r, obuf *b) {
    for (const char *t = PICK(r, NEUTRAL); *t; t++) {
        if (t[0] != '{' || !t[1] || t[2] != '}') { put(b, t, 1); continue; }
        char c = t[1];
        t += 2;
        puts_(b, c == 'N' ? PICK(r, NAMES) : c == 'P' ? PICK(r, PLACES) : c == 'O' ? PICK(r, OBJECTS)
                                                                                  : PICK(r, NEUTRAL_TIMES));
    }
}

void lp_corpus_polarity_sentences(uint64_t seed, int n, lp_polarity_sentence *out) {
    assert(n >= 0 && (out || n == 0));
    lp_rng rng; /* a stream of its own, as lp_corpus_ioi_prompts' */
    lp_rng_seed(&rng, seed ^ 0x9013A217ull);
    for (int i = 0; i < n; i++) {
        lp_polarity_sentence *p = &out[i];
        *p = (lp_polarity_sentence){.kind = (lp_polarity_kind)(i % 3), .label = (i / 3) % 2, .first = -1};
        obuf b = {.s = p->text, .cap = sizeof p->text, .fixed = true};
        if (chance(&rng, 0.3)) neutral_sentence(&rng, &b), put(&b, " ", 1);
        if (p->kind == LP_POLARITY_BUT) {
            p->first = chance(&rng, 0.5);
            polarity_clause(&rng, &b, p->first, chance(&rng, 0.3));
            puts_(&b, " but ");
        }
        bool negated = p->kind == LP_POLARITY_NOT || (p->kind == LP_POLARITY_BUT && chance(&rng, 0.3));
        polarity_clause(&rng, &b, p->label, negated);
        put(&b, ".", 1);
        assert(!b.oom); /* the longest sentence fits with room to spare */
        for (size_t k = 0; k < b.n; k++) /* sentences start with a capital */
            if (k == 0 || (k >= 2 && p->text[k - 2] == '.')) p->text[k] = (char)toupper((unsigned char)p->text[k]);
    }
}

const char *lp_polarity_kind_name(lp_polarity_kind k) {
    return k == LP_POLARITY_PLAIN ? "plain" : k == LP_POLARITY_NOT ? "not" : "but";
}
