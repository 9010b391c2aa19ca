/* The one table of the browser's keys, and the help screen written from it. */
#include "keymap.h"

#include <stdio.h>
#include <string.h>

#include "view.h"

#define ALL LP_SCOPE_ALL
#define LINE LP_SCOPE_LINE
#define HELP LP_SCOPE_HELP

static const char VIEW_N[] = "go to view N (numbered in the title bar)";
/* The model view's arrows move over heads, where elsewhere they move the token. */
static const char FEATURE_LEFT[] = "previous feature (column to the left; here \xE2\x86\x90 \xE2\x86\x92 h l move the feature)";
static const char HEAD_LEFT[] = "head to the left (here \xE2\x86\x90 \xE2\x86\x92 h l move the head, not the token)";

static const lp_binding KEYMAP[] = {
    {ALL, LP_KEY_LEFT, "\xE2\x86\x90", LP_DO_TOKEN_PREV, 0, "previous token (every view follows the token strip)"},
    {ALL, 'h', "h", LP_DO_TOKEN_PREV, 0, "previous token (every view follows the token strip)"},
    {ALL, LP_KEY_RIGHT, "\xE2\x86\x92", LP_DO_TOKEN_NEXT, 0, "next token"},
    {ALL, 'l', "l", LP_DO_TOKEN_NEXT, 0, "next token"},
    {ALL, LP_KEY_HOME, "Home", LP_DO_TOKEN_FIRST, 0, "first token"},
    {ALL, 'g', "g", LP_DO_TOKEN_FIRST, 0, "first token"},
    {ALL, LP_KEY_END, "End", LP_DO_TOKEN_LAST, 0, "last token"},
    {ALL, 'G', "G", LP_DO_TOKEN_LAST, 0, "last token"},
    {ALL, '/', "/", LP_DO_SEARCH, 0, "search the run's tokens for text (any case; Enter alone repeats the last)"},
    {ALL, 'n', "n", LP_DO_SEARCH_NEXT, 0, "next token that matches the search"},
    {ALL, 'N', "N", LP_DO_SEARCH_PREV, 0, "previous token that matches the search"},
    {ALL, 's', "s", LP_DO_SIDE, 0,
     "encoder-decoders: the selection to the other strip line (source, target); the attention follows (encoder's, "
     "decoder's)"},
    {ALL, '[', "[", LP_DO_LAYER_PREV, 0, "previous layer"},
    {ALL, ']', "]", LP_DO_LAYER_NEXT, 0, "next layer"},
    {ALL, '{', "{", LP_DO_HEAD_PREV, 0, "previous head"},
    {ALL, '}', "}", LP_DO_HEAD_NEXT, 0, "next head"},
    {ALL, LP_KEY_TAB, "Tab", LP_DO_VIEW_NEXT, 0, "next view"},
    {ALL, LP_KEY_BACKTAB, "S-Tab", LP_DO_VIEW_PREV, 0, "previous view"},
    {ALL, '1', "1", LP_DO_VIEW, LP_VIEW_ATTENTION, VIEW_N},
    {ALL, '2', "2", LP_DO_VIEW, LP_VIEW_HEADS, VIEW_N},
    {ALL, '3', "3", LP_DO_VIEW, LP_VIEW_ACTIVATIONS, VIEW_N},
    {ALL, '4', "4", LP_DO_VIEW, LP_VIEW_ATTRIBUTIONS, VIEW_N},
    {ALL, '5', "5", LP_DO_VIEW, LP_VIEW_LENS, VIEW_N},
    {ALL, '6', "6", LP_DO_VIEW, LP_VIEW_FINDINGS, VIEW_N},
    {ALL, '7', "7", LP_DO_VIEW, LP_VIEW_PATCHING, VIEW_N},
    {ALL, '8', "8", LP_DO_VIEW, LP_VIEW_MODEL, VIEW_N},
    {ALL, '9', "9", LP_DO_VIEW, LP_VIEW_EXAMPLES, VIEW_N},
    {ALL, '0', "0", LP_DO_VIEW, LP_VIEW_FEATURES, VIEW_N},
    {ALL, ':', ":", LP_DO_COMMAND, 0,
     "command line: any loupe command (run, load, attr, sql, ...); attn L H, heads, lens and features open their "
     "view, sae load opens view 0 on the dictionary"},
    {ALL, 'm', "m", LP_DO_NOTE, 0, "write a finding about what is under the cursor"},
    {ALL, 'o', "o", LP_DO_OUTPUT, 0, "show or hide the last command's output"},
    {ALL, LP_KEY_PAGE_UP, "PgUp", LP_DO_OUTPUT_UP, 0, "scroll the output up"},
    {ALL, LP_KEY_PAGE_DOWN, "PgDn", LP_DO_OUTPUT_DOWN, 0, "scroll the output down"},
    {ALL, LP_KEY_ESC, "Esc", LP_DO_DISMISS, 0, "hide the output and the message; cancels a running command"},
    {ALL, LP_KEY_CTRL('c'), "C-c", LP_DO_DISMISS, 0, "hide the output and the message; cancels a running command"},
    {ALL, '?', "?", LP_DO_HELP, 0, "this help"},
    {ALL, LP_KEY_CTRL('l'), "C-l", LP_DO_REDRAW, 0, "redraw the screen"},
    {ALL, 'q', "q", LP_DO_QUIT, 0, "leave the browser"},

    {LP_VIEW_ATTENTION, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "previous query row (the selected token)"},
    {LP_VIEW_ATTENTION, 'k', "k", LP_DO_UP, 0, "previous query row (the selected token)"},
    {LP_VIEW_ATTENTION, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "next query row"},
    {LP_VIEW_ATTENTION, 'j', "j", LP_DO_DOWN, 0, "next query row"},
    {LP_VIEW_ATTENTION, LP_KEY_SHIFT_LEFT, "S-\xE2\x86\x90", LP_DO_LEFT, 0, "key column left"},
    {LP_VIEW_ATTENTION, 'H', "H", LP_DO_LEFT, 0, "key column left"},
    {LP_VIEW_ATTENTION, LP_KEY_SHIFT_RIGHT, "S-\xE2\x86\x92", LP_DO_RIGHT, 0, "key column right"},
    {LP_VIEW_ATTENTION, 'L', "L", LP_DO_RIGHT, 0, "key column right"},
    {LP_VIEW_ATTENTION, 'a', "a", LP_DO_FOLLOW, 0, "key column follows the row's strongest key"},
    {LP_VIEW_ATTENTION, 'x', "x", LP_DO_ATTN_KIND, 0,
     "encoder-decoders: next attention: decoder self \xE2\x86\x92 cross (target \xC3\x97 source) \xE2\x86\x92 "
     "encoder self"},

    {LP_VIEW_HEADS, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "previous layer"},
    {LP_VIEW_HEADS, 'k', "k", LP_DO_UP, 0, "previous layer"},
    {LP_VIEW_HEADS, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "next layer"},
    {LP_VIEW_HEADS, 'j', "j", LP_DO_DOWN, 0, "next layer"},
    {LP_VIEW_HEADS, LP_KEY_SHIFT_LEFT, "S-\xE2\x86\x90", LP_DO_LEFT, 0, "previous head"},
    {LP_VIEW_HEADS, 'H', "H", LP_DO_LEFT, 0, "previous head"},
    {LP_VIEW_HEADS, LP_KEY_SHIFT_RIGHT, "S-\xE2\x86\x92", LP_DO_RIGHT, 0, "next head"},
    {LP_VIEW_HEADS, 'L', "L", LP_DO_RIGHT, 0, "next head"},
    {LP_VIEW_HEADS, 'c', "c", LP_DO_METRIC_NEXT, 0, "next metric"},
    {LP_VIEW_HEADS, 'C', "C", LP_DO_METRIC_PREV, 0, "previous metric"},
    {LP_VIEW_HEADS, LP_KEY_ENTER, "Enter", LP_DO_ENTER, 0, "open the head in the attention view"},
    {LP_VIEW_HEADS, 'x', "x", LP_DO_ATTN_KIND, 0,
     "encoder-decoders: the next attention's heads (and its scan's): decoder self \xE2\x86\x92 cross \xE2\x86\x92 "
     "encoder self"},

    {LP_VIEW_ACTIVATIONS, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "previous layer (its top neurons)"},
    {LP_VIEW_ACTIVATIONS, 'k', "k", LP_DO_UP, 0, "previous layer (its top neurons)"},
    {LP_VIEW_ACTIVATIONS, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "next layer"},
    {LP_VIEW_ACTIVATIONS, 'j', "j", LP_DO_DOWN, 0, "next layer"},

    {LP_VIEW_ATTRIBUTIONS, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "newer stored attribution"},
    {LP_VIEW_ATTRIBUTIONS, 'k', "k", LP_DO_UP, 0, "newer stored attribution"},
    {LP_VIEW_ATTRIBUTIONS, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "older stored attribution"},
    {LP_VIEW_ATTRIBUTIONS, 'j', "j", LP_DO_DOWN, 0, "older stored attribution"},
    {LP_VIEW_ATTRIBUTIONS, 't', "t", LP_DO_TARGET_NEXT, 0,
     "explain the next label (classifier), mask (masked LM) or decoder position (encoder-decoder) with the same "
     "method: the stored one, or `attr` makes it; in a series (attr --from, generate --attr), its next step"},

    {LP_VIEW_LENS, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "previous layer row"},
    {LP_VIEW_LENS, 'k', "k", LP_DO_UP, 0, "previous layer row"},
    {LP_VIEW_LENS, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "next layer row"},
    {LP_VIEW_LENS, 'j', "j", LP_DO_DOWN, 0, "next layer row"},

    {LP_VIEW_FINDINGS, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "previous line"},
    {LP_VIEW_FINDINGS, 'k', "k", LP_DO_UP, 0, "previous line"},
    {LP_VIEW_FINDINGS, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "next line"},
    {LP_VIEW_FINDINGS, 'j', "j", LP_DO_DOWN, 0, "next line"},
    {LP_VIEW_FINDINGS, LP_KEY_ENTER, "Enter", LP_DO_ENTER, 0,
     "a finding: go to its run, layer, head and token; a session: make it current"},

    {LP_VIEW_PATCHING, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "layer row above"},
    {LP_VIEW_PATCHING, 'k', "k", LP_DO_UP, 0, "layer row above"},
    {LP_VIEW_PATCHING, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "layer row below"},
    {LP_VIEW_PATCHING, 'j', "j", LP_DO_DOWN, 0, "layer row below"},
    {LP_VIEW_PATCHING, 'c', "c", LP_DO_METRIC_NEXT, 0, "next stored patching result"},

    {LP_VIEW_MODEL, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "layer above (the row of thumbnails)"},
    {LP_VIEW_MODEL, 'k', "k", LP_DO_UP, 0, "layer above (the row of thumbnails)"},
    {LP_VIEW_MODEL, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "layer below"},
    {LP_VIEW_MODEL, 'j', "j", LP_DO_DOWN, 0, "layer below"},
    {LP_VIEW_MODEL, LP_KEY_LEFT, "\xE2\x86\x90", LP_DO_LEFT, 0, HEAD_LEFT},
    {LP_VIEW_MODEL, 'h', "h", LP_DO_LEFT, 0, HEAD_LEFT},
    {LP_VIEW_MODEL, LP_KEY_RIGHT, "\xE2\x86\x92", LP_DO_RIGHT, 0, "head to the right"},
    {LP_VIEW_MODEL, 'l', "l", LP_DO_RIGHT, 0, "head to the right"},
    {LP_VIEW_MODEL, LP_KEY_ENTER, "Enter", LP_DO_ENTER, 0, "zoom in: the head's whole pattern in the attention view"},

    {LP_VIEW_EXAMPLES, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "previous example"},
    {LP_VIEW_EXAMPLES, 'k', "k", LP_DO_UP, 0, "previous example"},
    {LP_VIEW_EXAMPLES, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "next example"},
    {LP_VIEW_EXAMPLES, 'j', "j", LP_DO_DOWN, 0, "next example"},
    {LP_VIEW_EXAMPLES, LP_KEY_ENTER, "Enter", LP_DO_ENTER, 0,
     "open the example's item as the current run (its stored run, as itself) at its token: a neuron's in view 3, a "
     "head's query in view 1, a feature's in view 0 on its column"},
    {LP_VIEW_EXAMPLES, 'u', "u", LP_DO_UNIT_KIND, 0,
     "a neuron's examples (the strongest at the selected token, as view 3 lists first, or the last one shown) or the "
     "head's; from a feature, back to them; :examples neuron L.N names one"},
    {LP_VIEW_EXAMPLES, 'f', "f", LP_DO_FEATURE_UNIT, 0,
     "the feature selected in view 0 (:examples feature ID)"},
    {LP_VIEW_EXAMPLES, LP_KEY_SHIFT_LEFT, "S-\xE2\x86\x90", LP_DO_LEFT, 0, "previous neuron (or head, or feature)"},
    {LP_VIEW_EXAMPLES, 'H', "H", LP_DO_LEFT, 0, "previous neuron (or head, or feature)"},
    {LP_VIEW_EXAMPLES, LP_KEY_SHIFT_RIGHT, "S-\xE2\x86\x92", LP_DO_RIGHT, 0, "next neuron (or head, or feature)"},
    {LP_VIEW_EXAMPLES, 'L', "L", LP_DO_RIGHT, 0, "next neuron (or head, or feature)"},
    {LP_VIEW_EXAMPLES, 'd', "d", LP_DO_DATASET_NEXT, 0, "the next dataset of this model (newest first)"},
    {LP_VIEW_EXAMPLES, 'c', "c", LP_DO_METRIC_NEXT, 0,
     "a head's examples by the next metric: its strongest key, entropy, prev_token, first_token, duplicate_token, "
     "induction, max_attn"},
    {LP_VIEW_EXAMPLES, 'C', "C", LP_DO_METRIC_PREV, 0, "a head's examples by the previous metric"},

    {LP_VIEW_FEATURES, LP_KEY_UP, "\xE2\x86\x91", LP_DO_UP, 0, "previous token (row)"},
    {LP_VIEW_FEATURES, 'k', "k", LP_DO_UP, 0, "previous token (row)"},
    {LP_VIEW_FEATURES, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_DOWN, 0, "next token (row)"},
    {LP_VIEW_FEATURES, 'j', "j", LP_DO_DOWN, 0, "next token (row)"},
    {LP_VIEW_FEATURES, LP_KEY_LEFT, "\xE2\x86\x90", LP_DO_LEFT, 0, FEATURE_LEFT},
    {LP_VIEW_FEATURES, 'h', "h", LP_DO_LEFT, 0, FEATURE_LEFT},
    {LP_VIEW_FEATURES, LP_KEY_RIGHT, "\xE2\x86\x92", LP_DO_RIGHT, 0, "next feature (column to the right)"},
    {LP_VIEW_FEATURES, 'l', "l", LP_DO_RIGHT, 0, "next feature (column to the right)"},
    {LP_VIEW_FEATURES, 'd', "d", LP_DO_METRIC_NEXT, 0, "the next loaded dictionary"},
    {LP_VIEW_FEATURES, LP_KEY_ENTER, "Enter", LP_DO_ENTER, 0, "the feature's `feature ID` output in the pane"},
    {LP_VIEW_FEATURES, 'a', "a", LP_DO_LOAD, 0, "load a dictionary: the command line with `sae load ` typed"},

    {LINE, LP_KEY_ENTER, "Enter", LP_DO_EDIT_ACCEPT, 0, "run the line"},
    {LINE, LP_KEY_ESC, "Esc", LP_DO_EDIT_CANCEL, 0, "leave the line"},
    {LINE, LP_KEY_CTRL('c'), "C-c", LP_DO_EDIT_CANCEL, 0, "leave the line"},
    {LINE, LP_KEY_CTRL('g'), "C-g", LP_DO_EDIT_CANCEL, 0, "leave the line"},
    {LINE, LP_KEY_TAB, "Tab", LP_DO_EDIT_COMPLETE, 0, "complete a command, option, layer, head, file..."},
    {LINE, LP_KEY_UP, "\xE2\x86\x91", LP_DO_EDIT_HISTORY_PREV, 0, "previous line in the history (shared with the prompt)"},
    {LINE, LP_KEY_CTRL('p'), "C-p", LP_DO_EDIT_HISTORY_PREV, 0, "previous line in the history (shared with the prompt)"},
    {LINE, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_EDIT_HISTORY_NEXT, 0, "next line in the history"},
    {LINE, LP_KEY_CTRL('n'), "C-n", LP_DO_EDIT_HISTORY_NEXT, 0, "next line in the history"},
    {LINE, LP_KEY_LEFT, "\xE2\x86\x90", LP_DO_EDIT_LEFT, 0, "character left"},
    {LINE, LP_KEY_CTRL('b'), "C-b", LP_DO_EDIT_LEFT, 0, "character left"},
    {LINE, LP_KEY_RIGHT, "\xE2\x86\x92", LP_DO_EDIT_RIGHT, 0, "character right"},
    {LINE, LP_KEY_CTRL('f'), "C-f", LP_DO_EDIT_RIGHT, 0, "character right"},
    {LINE, LP_KEY_SHIFT_LEFT, "S-\xE2\x86\x90", LP_DO_EDIT_WORD_LEFT, 0, "word left"},
    {LINE, LP_KEY_SHIFT_RIGHT, "S-\xE2\x86\x92", LP_DO_EDIT_WORD_RIGHT, 0, "word right"},
    {LINE, LP_KEY_HOME, "Home", LP_DO_EDIT_HOME, 0, "start of the line"},
    {LINE, LP_KEY_CTRL('a'), "C-a", LP_DO_EDIT_HOME, 0, "start of the line"},
    {LINE, LP_KEY_END, "End", LP_DO_EDIT_END, 0, "end of the line"},
    {LINE, LP_KEY_CTRL('e'), "C-e", LP_DO_EDIT_END, 0, "end of the line"},
    {LINE, LP_KEY_BACKSPACE, "Backspace", LP_DO_EDIT_BACKSPACE, 0, "delete the character before the cursor"},
    {LINE, LP_KEY_DELETE, "Del", LP_DO_EDIT_DELETE, 0, "delete the character under the cursor"},
    {LINE, LP_KEY_CTRL('d'), "C-d", LP_DO_EDIT_DELETE, 0, "delete the character under the cursor"},
    {LINE, LP_KEY_CTRL('k'), "C-k", LP_DO_EDIT_KILL_END, 0, "delete to the end of the line"},
    {LINE, LP_KEY_CTRL('u'), "C-u", LP_DO_EDIT_KILL_START, 0, "delete to the start of the line"},
    {LINE, LP_KEY_CTRL('w'), "C-w", LP_DO_EDIT_KILL_WORD, 0, "delete the word before the cursor"},

    {HELP, LP_KEY_UP, "\xE2\x86\x91", LP_DO_HELP_UP, 0, "scroll up"},
    {HELP, 'k', "k", LP_DO_HELP_UP, 0, "scroll up"},
    {HELP, LP_KEY_DOWN, "\xE2\x86\x93", LP_DO_HELP_DOWN, 0, "scroll down"},
    {HELP, 'j', "j", LP_DO_HELP_DOWN, 0, "scroll down"},
    {HELP, LP_KEY_PAGE_UP, "PgUp", LP_DO_HELP_PAGE_UP, 0, "page up"},
    {HELP, LP_KEY_PAGE_DOWN, "PgDn", LP_DO_HELP_PAGE_DOWN, 0, "page down"},
    {HELP, ' ', "Space", LP_DO_HELP_PAGE_DOWN, 0, "page down"},
    {HELP, LP_KEY_ESC, "Esc", LP_DO_HELP_CLOSE, 0, "close the help (so does any other key)"},
    {HELP, 'q', "q", LP_DO_HELP_CLOSE, 0, "close the help (so does any other key)"},
    {HELP, '?', "?", LP_DO_HELP_CLOSE, 0, "close the help (so does any other key)"},
};
#define N_KEYMAP ((int)(sizeof KEYMAP / sizeof *KEYMAP))

const lp_binding *lp_keymap(int *n) {
    *n = N_KEYMAP;
    return KEYMAP;
}

const lp_binding *lp_keymap_find(int scope, int key) {
    for (int i = 0; i < N_KEYMAP; i++)
        if (KEYMAP[i].scope == scope && KEYMAP[i].key == key) return &KEYMAP[i];
    return NULL;
}

static void heading_of(int scope, char *buf, size_t cap) {
    if (scope == LP_SCOPE_ALL) snprintf(buf, cap, "Everywhere");
    else if (scope == LP_SCOPE_LINE) snprintf(buf, cap, "On the command line (:, / and m)");
    else if (scope == LP_SCOPE_HELP) snprintf(buf, cap, "In this help");
    else snprintf(buf, cap, "%c %s", lp_view_key(scope), lp_view_get(scope)->title);
}

int lp_keymap_help(lp_help_line *out, int cap) {
    static char headings[LP_VIEW_COUNT + 3][64];
    /* Everywhere, each view in its number's order, the command line, the help. */
    int scopes[LP_VIEW_COUNT + 3], n_scopes = 0;
    scopes[n_scopes++] = LP_SCOPE_ALL;
    for (int v = 0; v < LP_VIEW_COUNT; v++) scopes[n_scopes++] = v;
    scopes[n_scopes++] = LP_SCOPE_LINE;
    scopes[n_scopes++] = LP_SCOPE_HELP;
    int n = 0;
    for (int k = 0; k < n_scopes; k++) {
        int scope = scopes[k];
        heading_of(scope, headings[k], sizeof headings[k]);
        if (n < cap) out[n] = (lp_help_line){.heading = headings[k]};
        n++;
        for (int i = 0; i < N_KEYMAP; i++) {
            if (KEYMAP[i].scope != scope) continue;
            /* Listed once, at its first binding, with every key bound to the same help. */
            bool seen = false;
            for (int j = 0; j < i && !seen; j++) seen = KEYMAP[j].scope == scope && strcmp(KEYMAP[j].help, KEYMAP[i].help) == 0;
            if (seen) continue;
            if (n < cap) {
                lp_help_line *h = &out[n];
                *h = (lp_help_line){.help = KEYMAP[i].help};
                size_t o = 0;
                for (int j = i; j < N_KEYMAP; j++)
                    if (KEYMAP[j].scope == scope && strcmp(KEYMAP[j].help, KEYMAP[i].help) == 0 && o + 1 < sizeof h->keys)
                        o += (size_t)snprintf(h->keys + o, sizeof h->keys - o, "%s%s", o ? " " : "", KEYMAP[j].key_name);
            }
            n++;
        }
    }
    return n;
}
