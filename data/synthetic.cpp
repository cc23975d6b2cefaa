#include "data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/rng.h"
#include "core/utf8.h"
#include "reading/chunker.h"

namespace sr {

namespace {
const char* kNoise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const std::vector<std::string> kAdjectives = {"ancient", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow",
                                              "icy", "jolly", "kind", "lively", "mighty", "narrow", "odd", "proud",
                                              "quiet", "rapid", "silent", "tiny", "urban", "vast", "wild", "young"};
const std::vector<std::string> kNouns = {"apple", "bridge", "castle", "desert", "engine", "forest", "garden", "harbor",
                                         "island", "jungle", "kettle", "lantern", "meadow", "needle", "orchard", "pillow",
                                         "quarry", "river", "saddle", "tunnel", "valley", "wagon", "yard", "zebra"};
const std::vector<std::string> kEssayWords = {
    "the", "a", "of", "to", "and", "in", "that", "is", "was", "it", "for", "on", "with", "as", "startup", "founders",
    "people", "work", "time", "idea", "ideas", "company", "money", "users", "problem", "good", "new", "think", "make",
    "build", "growth", "investors", "product", "market", "writing", "essay", "learn", "hard", "simple", "often",
    "because", "when", "what", "most", "which", "would", "could", "should", "very", "best", "thing", "way", "year"};

std::string random_key(Rng& r) { return kAdjectives[r.below(kAdjectives.size())] + "-" + kNouns[r.below(kNouns.size())]; }
std::string random_number(Rng& r) { return std::to_string(1000000 + r.below(9000000)); }
std::string random_uuid(Rng& r) {
  char buf[40];
  uint64_t a = r.next_u64(), b = r.next_u64();
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", unsigned(a >> 32), unsigned((a >> 16) & 0xffff),
                unsigned(a & 0xfff), unsigned(0x8000 | (b >> 48 & 0x3fff)), (unsigned long long)(b & 0xffffffffffffULL));
  return buf;
}
// Procedural pseudo-essay sentence (different text from the noise filler; deterministic per rng).
std::string essay_sentence(Rng& r) {
  int n = 6 + int(r.below(12));
  std::string s;
  for (int i = 0; i < n; ++i) {
    std::string w = kEssayWords[r.below(kEssayWords.size())];
    if (i == 0) w[0] = char(std::toupper(w[0]));
    s += (i ? " " : "") + w;
  }
  return s + (r.below(8) == 0 ? "?" : ".");
}

// A number of n digits, the first not 0.
std::string random_digits(Rng& r, int n) {
  std::string d(1, char('1' + r.below(9)));
  while (int(d.size()) < n) d.push_back(char('0' + r.below(10)));
  return d;
}

// A sentence with numbers but no key (--number-noise): distractors shaped like needle values
// (1-9 digits, dates, versions), so a reader must match the asked key, not copy any number.
std::string number_sentence(Rng& r) {
  auto num = [&](int lo, int hi) {  // a number of lo..hi digits
    int n = lo + int(r.below(uint64_t(hi - lo + 1)));
    return random_digits(r, n);
  };
  switch (r.below(8)) {
    case 0: return "In " + std::to_string(1900 + r.below(126)) + " the count reached " + num(2, 7) + ".";
    case 1: return "Version " + num(1, 1) + "." + num(1, 2) + " was released on day " + num(1, 3) + ".";
    case 2: return "The invoice number was " + num(5, 8) + ".";
    case 3: return "It cost " + num(2, 6) + " dollars and took " + num(1, 2) + " hours.";
    case 4: return "Room " + num(3, 4) + " is on floor " + num(1, 2) + ".";
    case 5: return "Call " + num(3, 3) + "-" + num(4, 4) + " for details.";
    case 6: return "The total came to " + num(6, 9) + ".";
    default: return "Order " + num(7, 7) + " shipped.";
  }
}

// A pronounceable invented word of 2-3 syllables ("Velmora", "tasik"), capitalized half the time.
std::string invented_word(Rng& r) {
  const char* cons = "bdfgklmnprstvz";
  const char* vow = "aeiou";
  std::string w;
  int n = 2 + int(r.below(2));
  for (int i = 0; i < n; ++i) {
    w.push_back(cons[r.below(14)]);
    w.push_back(vow[r.below(5)]);
    if (r.below(3) == 0) w.push_back(cons[r.below(14)]);
  }
  if (r.below(2)) w[0] = char(std::toupper(w[0]));
  return w;
}

// --values mixed: numbers of 3-10 digits, letter-digit codes ("QX-4821", "7KF2M9"), word pairs
// and uuids, so a reader learns to copy whatever follows the key, not a 7-digit shape.
std::string mixed_value(Rng& r) {
  const uint64_t kind = r.below(10);
  if (kind < 5) return random_digits(r, 3 + int(r.below(8)));
  if (kind < 8) {
    const char* alnum = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    std::string c;
    int n = 5 + int(r.below(4));
    for (int i = 0; i < n; ++i) c.push_back(alnum[r.below(32)]);
    if (kind == 7) c.insert(2, "-");
    return c;
  }
  return kind == 8 ? random_key(r) : random_uuid(r);
}

// --values free: plain numbers of 3-8 digits, dashed combinations ("18-24-36"), lowercase
// passwords ("quietlantern42") and short phrases ("the calm kettle behind the old harbor").
std::string free_value(Rng& r) {
  const uint64_t kind = r.below(10);
  if (kind < 3) return random_digits(r, 3 + int(r.below(6)));
  if (kind < 5) {
    std::string c = random_digits(r, 2);
    for (int g = 1 + int(r.below(2)); g >= 0; --g) c += "-" + random_digits(r, 2);
    return c;
  }
  const auto& adj = kAdjectives;
  const auto& noun = kNouns;
  if (kind < 7) return adj[r.below(adj.size())] + noun[r.below(noun.size())] + std::to_string(10 + r.below(90));
  static const char* preps[] = {"behind", "under", "next to", "inside", "beyond"};
  return "the " + adj[r.below(adj.size())] + " " + noun[r.below(noun.size())] + " " + preps[r.below(5)] + " the " +
         adj[r.below(adj.size())] + " " + noun[r.below(noun.size())];
}

struct Needle {
  std::string text, value;  // sentence inserted in the haystack; the value it carries
  int answer = -1;          // index of the evidence it provides (answers / clues order), else -1 (distractor)
  std::string key;          // niah family: the key the value belongs to
};

struct Spec {
  std::string instruction, question, target;
  std::vector<Needle> needles;
  std::vector<std::string> answers;
  bool essay = false;
  bool needle_haystack = false;  // niah_multikey_2/3: the haystack is distractor needles
  bool uuid_keys = false, uuid_values = false;
  std::string value_type = "number";
  std::string random_value(Rng& r) const {
    if (value_type == "mixed") return mixed_value(r);
    if (value_type == "free") return free_value(r);
    return value_type == "uuid" ? random_uuid(r) : value_type == "word" ? random_key(r) : random_number(r);
  }
  std::vector<std::string> keys;  // keys in use (distractors must not reuse them)
  bool ordered = false;  // needles must appear in list order (assignment chains)
  std::vector<std::string> clues;  // multi-hop: the facts needed (evidence order); empty = the answers
};

const std::vector<std::string> kPeople = {"Alice", "Bruno", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivan",
                                          "Jonas", "Keiko", "Lena", "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa"};
const std::vector<std::string> kCompanies = {"Acme Tools", "Blue Finch", "Cobalt Labs", "Delta Foods", "Ember Works",
                                             "Fjord Systems", "Granite Bank", "Harbor Lines", "Iris Optics",
                                             "Juniper Mills", "Kestrel Air", "Lumen Press"};
const std::vector<std::string> kCities = {"Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Tallinn", "Quito", "Perth",
                                          "Leeds", "Porto", "Kyoto", "Tunis", "Bergen", "Malmo"};

template <class T>
std::vector<T> pick(const std::vector<T>& pool, size_t n, Rng& r) {  // n distinct, random order
  std::vector<T> p = pool;
  for (size_t i = p.size(); i > 1; --i) std::swap(p[i - 1], p[r.below(i)]);
  p.resize(n);
  return p;
}

std::string random_var(Rng& r) {
  std::string v;
  for (int i = 0; i < 5; ++i) v.push_back(char('A' + r.below(26)));
  return v;
}

std::string join_keys(const std::vector<std::string>& k) {  // "a", "a and b", "a, b, and c"
  if (k.size() == 1) return k[0];
  if (k.size() == 2) return k[0] + " and " + k[1];
  std::string s;
  for (size_t i = 0; i + 1 < k.size(); ++i) s += k[i] + ", ";
  return s + "and " + k.back();
}

// Phrasings (--phrasing): "ruler" keeps RULER's exact sentences; "varied" draws each sample's needle,
// question and key from a training pool; "heldout" from a disjoint pool (generalization checks:
// a model trained on "varied" never saw these sentences, value names or keys).
struct Phrasing {
  std::vector<std::string> needles, questions, instructions, names, passkey_needles, passkey_questions;
  std::vector<std::string> key_first, key_second;  // key = first + " " + second (or a name alone)
};
std::vector<std::string> concat(std::initializer_list<std::vector<std::string>> parts) {
  std::vector<std::string> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
const Phrasing& phrasing_pool(const std::string& which) {
  static const Phrasing varied = {
      {"One of the special magic {T}s for {K} is: {V}.", "The special magic {T} for {K} is {V}.",
       "The secret {T} for {K} is {V}.", "Remember that the {T} of {K} is {V}.", "{K} has the {T} {V}.",
       "Note: the {T} assigned to {K} is {V}.", "The {T} for {K}: {V}.", "Important: {K} -> {V} ({T})."},
      {"What is the special magic {T} for {K} mentioned in the provided text?", "What is the {T} for {K}?",
       "Which {T} belongs to {K}?", "Find the {T} of {K}.", "Tell me the {T} assigned to {K}.",
       "What {T} was given for {K}?"},
      {"A special magic {T} is hidden within the following text. Make sure to memorize it.",
       "Read the text below and look for the {T} of {K}.", "The answer is somewhere in this document.", ""},
      {"number", "code", "passcode", "id", "secret number"},
      {"The pass key is {V}. Remember it. {V} is the pass key.", "The password is {V}.",
       "The pass key is {V}.", "Remember the pass key: {V}."},
      {"What is the pass key?", "What is the password?", "Which pass key is hidden in the text?",
       "What is the pass key?"},  // question i asks about needle i
      // keys: RULER's adjectives + a few more + six names, then RULER's nouns + a few more
      concat({kAdjectives, {"north", "south", "old", "new", "red", "green"},
              std::vector<std::string>(kPeople.begin(), kPeople.begin() + 6)}),
      concat({kNouns, {"office", "account", "project", "locker", "server", "vault"}})};
  static const Phrasing heldout = {
      {"{K}'s {T} is {V}.", "For {K}, the {T} is {V}.", "Write this down: {K} uses {T} {V}.",
       "It was agreed that the {T} of {K} would be {V}."},
      {"What {T} does {K} use?", "Give the {T} for {K}.", "What was the {T} of {K} in the text?"},
      {"Answer from the text.", ""},
      {"pin", "serial number", "ticket number"},
      {"Your access code is {V}. Keep it safe.", "The entry code is {V}."},
      {"What is the access code?", "What is the entry code?"},
      {"Professor", "Captain", "Doctor", "Agent", "Aunt", "Uncle"},
      {"Moreau", "Okafor", "Lindqvist", "Tanaka", "Alvarez", "Novak", "Haddad", "Kowalski"}};
  // "wide": the "varied" pool and many more sentences, value names and key forms (people, places,
  // companies, projects), still disjoint from "heldout" (no titles, no possessive needles).
  static const Phrasing wide = {
      concat({varied.needles,
              {"The {T} of {K} is {V}.", "{K} was given the {T} {V}.", "Keep in mind: {K} goes with {T} {V}.",
               "According to the records, the {T} belonging to {K} is {V}.", "The {T} that {K} received is {V}.",
               "{K}: {T} = {V}.", "Do not forget the {T} for {K}. It is {V}.", "By the way, {K} has {V} as its {T}.",
               "The correct {T} for {K} happens to be {V}.", "{K} is associated with the {T} {V}.",
               "If anyone asks, the {T} of {K} is {V}.", "Here is the {T} for {K}: {V}.",
               "Attention please: the {T} for {K} has been set to {V}.", "{V} is the {T} for {K}."}}),
      concat({varied.questions,
              {"Look up the {T} of {K}.", "Which {T} is associated with {K}?", "Please report the {T} for {K}.",
               "According to the text, what is the {T} of {K}?", "What was the {T} mentioned for {K}?",
               "Can you recall the {T} for {K}?", "{K} has a {T} somewhere in the text. What is it?",
               "Question: what {T} goes with {K}?"}}),
      concat({varied.instructions,
              {"Answer the question using the document.", "Some information in the text is relevant to the question.",
               "Find the requested value in the text below.", "Read carefully; most of the text is irrelevant."}}),
      concat({varied.names, {"reference number", "account number", "registration code", "identifier", "combination",
                             "magic number", "lucky number", "license number", "key", "password"}}),
      concat({varied.passkey_needles,
              {"The secret password is {V}.", "Password: {V}. Do not share it.", "The key to get in is {V}.",
               "Use the pass key {V} to enter."}}),
      concat({varied.passkey_questions,
              {"What is the secret password?", "What is the password?", "What is the key to get in?",
               "Which pass key opens the door?"}}),
      concat({varied.key_first, std::vector<std::string>(kPeople.begin() + 6, kPeople.end()), kCities,
              {"project", "team", "room", "station", "blue", "golden", "silver", "hidden", "first", "last"}}),
      concat({varied.key_second, kCompanies, {"house", "group", "lab", "door", "garage", "box", "key", "file"}})};
  if (which == "varied") return varied;
  if (which == "wide" || which == "open") return wide;  // "open" also invents keys (task_spec)
  if (which == "heldout") return heldout;
  fail("--phrasing", "unknown phrasing '" + which + "' (valid: ruler, varied, wide, open, heldout)");
}
std::string fill(std::string t, const std::string& k, const std::string& v, const std::string& type) {
  auto put = [&](const std::string& from, const std::string& to) {
    for (size_t p; (p = t.find(from)) != std::string::npos;) t.replace(p, from.size(), to);
  };
  put("{K}", k), put("{V}", v), put("{T}", type);
  return t;
}
template <class T>
const T& one_of(const std::vector<T>& v, Rng& r) { return v[r.below(v.size())]; }

Spec task_spec(const std::string& task, Rng& r, const SyntheticOptions& o) {
  Spec s;
  if (task == "qa_hop") {  // two-hop QA: "P works for C." + "C is based in X." -> where does P work?
    auto people = pick(kPeople, 4, r);
    auto companies = pick(kCompanies, 4, r);
    auto cities = pick(kCities, 4, r);
    for (int i = 0; i < 4; ++i) {  // pair 0 is asked about; the other pairs distract
      std::string f1 = people[i] + " works for " + companies[i], f2 = companies[i] + " is based in " + cities[i];
      s.needles.push_back({f1 + ".", f1, i == 0 ? 0 : -1, ""});
      s.needles.push_back({f2 + ".", f2, i == 0 ? 1 : -1, ""});
    }
    s.clues = {s.needles[0].value, s.needles[1].value};
    s.answers = {cities[0]};
    for (size_t i = s.needles.size(); i > 1; --i) std::swap(s.needles[i - 1], s.needles[r.below(i)]);
    s.instruction = "Answer the question based on the facts hidden in the following text.";
    s.question = "In which city does " + people[0] + " work?";
    s.target = "the city where " + people[0] + " works";
    s.essay = true;
    return s;
  }
  if (task == "vt") {  // RULER variable tracking: chains of VAR X = value, VAR Y = VAR X, ...
    std::vector<std::string> used;
    std::vector<std::vector<std::pair<std::string, std::string>>> chains;  // (name, rhs)
    std::string queried_value;
    for (int c = 0; c < o.vt_chains; ++c) {
      std::string value = std::to_string(10000 + r.below(90000));
      if (c == 0) queried_value = value;
      std::vector<std::pair<std::string, std::string>> chain;
      std::string rhs = value;
      for (int h = 0; h <= o.vt_hops; ++h) {
        std::string v;
        do v = random_var(r);
        while (std::find(used.begin(), used.end(), v) != used.end());
        used.push_back(v);
        chain.push_back({v, rhs});
        rhs = "VAR " + v;
      }
      chains.push_back(chain);
    }
    // Interleave the chains, keeping each chain's order.
    std::vector<size_t> pos(chains.size(), 0);
    size_t left = chains.size() * size_t(o.vt_hops + 1);
    while (left--) {
      size_t c;
      do c = r.below(chains.size());
      while (pos[c] >= chains[c].size());
      auto& [name, rhs] = chains[c][pos[c]++];
      int ans = -1;
      if (c == 0) {
        ans = int(s.answers.size());
        s.answers.push_back(name);
      }
      s.needles.push_back({"VAR " + name + " = " + rhs + ".", name, ans, ""});
    }
    s.instruction = "Memorize and track the chain(s) of variable assignment hidden in the following text.";
    s.question = "Question: Find all variables that are assigned the value " + queried_value + " in the text above.";
    s.target = "variables equal to " + queried_value;
    s.ordered = true;
    return s;
  }
  if (task == "passkey") {
    std::string k = std::to_string(1 + r.below(50000));
    s.instruction = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                    "I will quiz you about the important information there.";
    s.question = "What is the pass key?";
    std::string needle = "The pass key is " + k + ". Remember it. " + k + " is the pass key.";
    if (o.phrasing != "ruler") {
      const Phrasing& p = phrasing_pool(o.phrasing);
      size_t i = r.below(p.passkey_needles.size());
      needle = fill(p.passkey_needles[i], "", k, "");
      s.question = p.passkey_questions[i];
    }
    s.needles.push_back({needle, k, 0, ""});
    s.answers = {k};
    s.target = "the pass key";
    return s;
  }
  // RULER niah family: keys x values; k keys (k-1 distractors unless queried), v values per key, q queried keys.
  int k = 1, v = 1, q = 1;
  if (task == "niah_multikey_1") k = 4;
  s.needle_haystack = task == "niah_multikey_2" || task == "niah_multikey_3";
  s.uuid_keys = task == "niah_multikey_3";
  if (task == "niah_multivalue") v = 4;
  if (task == "niah_multiquery") k = 4, q = 4;
  std::string type = task == "niah_single_3" || task == "niah_multikey_3" ? "uuid" : "number";
  if (!o.values.empty()) type = o.values;
  const bool uuid = type == "uuid";
  s.uuid_values = uuid;
  s.value_type = type;
  if (type == "mixed" || type == "free") type = "code";  // how RULER's sentences name such values
  const Phrasing* phr = o.phrasing == "ruler" ? nullptr : &phrasing_pool(o.phrasing);
  const bool wide = o.phrasing == "open";  // the wide pool with an open key space
  auto phrased_key = [&](Rng& g) {
    if (!phr) return random_key(g);
    if (!wide) return one_of(phr->key_first, g) + " " + one_of(phr->key_second, g);
    // "open": half of the keys carry an invented word, so the key space is open and a reader has
    // to compare keys letter by letter instead of recognizing a few hundred known pairs
    switch (g.below(4)) {
      case 0: return invented_word(g) + " " + one_of(phr->key_second, g);
      case 1: return one_of(phr->key_first, g) + " " + invented_word(g);
      default: return one_of(phr->key_first, g) + " " + one_of(phr->key_second, g);
    }
  };
  // A distractor key that shares a word with the asked key ("Lisbon vault" against "Lisbon garage").
  auto near_key = [&](const std::string& asked, Rng& g) {
    size_t sp = asked.find(' ');
    std::string other = phrased_key(g);
    size_t osp = other.find(' ');
    if (sp == std::string::npos || osp == std::string::npos) return other;
    return g.below(2) ? asked.substr(0, sp) + other.substr(osp) : other.substr(0, osp) + asked.substr(sp);
  };
  const std::string name = phr ? one_of(phr->names, r) : type;  // what the value is called
  std::vector<std::string> keys;
  while (int(keys.size()) < k) {
    std::string key = s.uuid_keys ? random_uuid(r)
                      : wide && !keys.empty() && r.below(2) ? near_key(keys[0], r)
                                                            : phrased_key(r);
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
  }
  std::vector<std::string> queried(keys.begin(), keys.begin() + q);
  s.keys = keys;
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < v; ++j) {
      std::string value = s.random_value(r);
      int ans = -1;
      if (i < q) {
        ans = int(s.answers.size());
        s.answers.push_back(value);
      }
      std::string text = phr ? fill(one_of(phr->needles, r), keys[i], value, name)
                             : "One of the special magic " + type + "s for " + keys[i] + " is: " + value + ".";
      s.needles.push_back({text, value, ans, keys[i]});
    }
  for (size_t i = s.needles.size(); i > 1; --i) std::swap(s.needles[i - 1], s.needles[r.below(i)]);
  std::string query = join_keys(queried);
  if (q * v == 1) {
    s.instruction = "A special magic " + type + " is hidden within the following text. Make sure to memorize it. "
                    "I will quiz you about the " + type + " afterwards.";
    s.question = "What is the special magic " + type + " for " + query + " mentioned in the provided text?";
    s.target = "the " + type + " for " + query;
    if (phr) {
      s.instruction = fill(one_of(phr->instructions, r), query, "", name);
      s.question = fill(one_of(phr->questions, r), query, "", name);
      s.target = "the " + name + " for " + query;
    }
  } else {
    s.instruction = "Some special magic " + type + "s are hidden within the following text. Make sure to memorize it. "
                    "I will quiz you about the " + type + "s afterwards.";
    s.question = "What are all the special magic " + type + "s for " + query + " mentioned in the provided text?";
    s.target = "all " + type + "s for " + query;
  }
  s.essay = task != "niah_single_1" && !s.needle_haystack;
  return s;
}
}  // namespace

std::vector<std::string> synthetic_task_names() {
  return {"passkey",         "niah_single_1",   "niah_single_2",   "niah_single_3",
          "niah_multikey_1", "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt",
          "qa_hop",          "cwe",             "fwe"};
}

// Sentences of the user's haystack files (split after ". ", "? ", "! " and newlines), validated UTF-8.
static std::vector<std::string> load_haystack(const std::vector<std::string>& files) {
  std::vector<std::string> out;
  for (auto& f : files) {
    std::string text = read_file(f);
    size_t bad = find_invalid_utf8(text);
    if (bad != std::string::npos) fail(f, "haystack is not valid UTF-8 (byte " + std::to_string(bad) + ")");
    size_t start = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      bool end = text[i] == '\n' || ((text[i] == '.' || text[i] == '?' || text[i] == '!') && i + 1 < text.size() && text[i + 1] == ' ');
      if (!end) continue;
      std::string sent = text.substr(start, i + 1 - start);
      start = i + 1;
      size_t b = sent.find_first_not_of(" \t\r\n");
      if (b != std::string::npos) out.push_back(sent.substr(b));
    }
    if (start < text.size() && text.find_first_not_of(" \t\r\n", start) != std::string::npos) out.push_back(text.substr(start));
  }
  if (!files.empty() && out.empty()) fail(files[0], "haystack files hold no text");
  return out;
}

namespace {
std::string coded_word(Rng& r, int len) {
  std::string w;
  for (int i = 0; i < len; ++i) w.push_back(char('a' + r.below(26)));
  return w;
}

// Aggregation tasks (RULER cwe / fwe): the answer needs counting over the whole context.
//   cwe: numbered list "1. w 2. w ..."; 10 common words x30 (x6 below 4k tokens), the rest x3 (x1).
//   fwe: space-separated coded words with Zipf counts ~ k^-2; rank 1 is the noise "...";
//        the answer is ranks 2-4.
json make_aggregation(const std::string& task, const SyntheticOptions& o, const Tokenizer& tok, Rng& r, int i) {
  std::vector<std::string> entries, answers;
  std::string instruction, question;
  if (task == "cwe") {
    const bool small = o.tokens < 4096;
    const int fc = small ? 6 : 30, fu = small ? 1 : 3;
    std::vector<std::string> used;
    auto fresh = [&] {
      std::string w;
      do w = coded_word(r, 4 + int(r.below(5)));
      while (std::find(used.begin(), used.end(), w) != used.end());
      used.push_back(w);
      return w;
    };
    size_t bytes = 0;
    auto add = [&](const std::string& w, int times) {
      for (int k = 0; k < times; ++k) {
        entries.push_back(w);
        bytes += w.size() + std::to_string(entries.size()).size() + 3;  // "N. w "
      }
    };
    for (int c = 0; c < 10; ++c) {
      answers.push_back(fresh());
      add(answers.back(), fc);
    }
    if (int(bytes) > o.tokens) fail("--tokens", "cwe needs at least " + std::to_string(bytes) + " tokens");
    while (int(bytes) < o.tokens) add(fresh(), fu);
    instruction = "Below is a numbered list of words. In these words, some appear more often than others. "
                  "Memorize the ones that appear most often.";
    question = "Question: What are the 10 most common words in the above list?";
  } else {  // fwe
    const int vocab = std::max(8, o.tokens / 50);
    std::vector<std::string> words = {"..."};
    while (int(words.size()) < vocab) words.push_back(coded_word(r, 6));
    // counts ~ N k^-2 / zeta(2), N chosen so the text reaches the target length
    const double zeta2 = 1.6449340668;
    int total = o.tokens / 7 + 1;  // ~7 bytes per coded word + space
    for (int k = 1; k <= vocab; ++k) {
      int c = std::max(1, int(total * std::pow(double(k), -2.0) / zeta2));
      for (int t = 0; t < c; ++t) entries.push_back(words[k - 1]);
    }
    answers = {words[1], words[2], words[3]};
    instruction = "Read the following coded text and track the frequency of each coded word. Find the three most "
                  "frequently appeared coded words.";
    question = "Question: Do not provide any explanation. Please ignore the dots '....'. What are the three most "
               "frequently appeared words in the above coded text?";
  }
  for (size_t k = entries.size(); k > 1; --k) std::swap(entries[k - 1], entries[r.below(k)]);
  std::string context;
  for (size_t k = 0; k < entries.size(); ++k) {
    if (task == "cwe") context += std::to_string(k + 1) + ". ";
    context += entries[k] + " ";
  }
  while (int(count_tokens(context, tok, false)) > o.tokens) context.pop_back();
  while (int(count_tokens(context, tok, false)) < o.tokens) context += task == "cwe" ? " " : " ...";
  while (int(count_tokens(context, tok, false)) > o.tokens) context.pop_back();
  return {{"id", task + "-" + std::to_string(o.tokens) + "-" + std::to_string(o.seed) + "-" + std::to_string(i)},
          {"task", task},
          {"context", context},
          {"input", instruction + " " + question},
          {"target", task == "cwe" ? "the 10 most common words" : "the 3 most frequent coded words"},
          {"answers", answers},
          {"length", count_tokens(context, tok, false)},
          {"depths", json::array()},
          {"evidence", json::array()},
          {"aggregate", task == "cwe" ? 10 : 3}};
}

// Running word counts over text read so far (cwe strips the list numbers; "..." is noise).
std::vector<std::pair<std::string, int>> top_words(const std::string& text, size_t k, bool numbered) {
  std::vector<std::pair<std::string, int>> counts;  // in first-seen order
  size_t i = 0;
  while (i < text.size()) {
    size_t b = text.find_first_not_of(' ', i);
    if (b == std::string::npos) break;
    size_t e = text.find(' ', b);
    if (e == std::string::npos) break;  // a word cut by the chunk end counts when complete
    std::string w = text.substr(b, e - b);
    i = e;
    if (w == "..." || w.empty() || (numbered && w.back() == '.')) continue;
    auto it = std::find_if(counts.begin(), counts.end(), [&](auto& p) { return p.first == w; });
    if (it == counts.end()) counts.push_back({w, 1});
    else ++it->second;
  }
  std::stable_sort(counts.begin(), counts.end(), [](auto& a, auto& b) { return a.second > b.second; });
  if (counts.size() > k) counts.resize(k);
  return counts;
}
}  // namespace

std::vector<json> make_synthetic(const SyntheticOptions& o, const Tokenizer& tok) {
  auto names = synthetic_task_names();
  if (std::find(names.begin(), names.end(), o.task) == names.end()) {
    std::string list;
    for (auto& n : names) list += (list.empty() ? "" : ", ") + n;
    fail("--task", "unknown task '" + o.task + "' (valid: " + list + ", copy, recall)");
  }
  if (o.tokens < 64) fail("--tokens", "must be at least 64");
  if (o.depth > 1) fail("--depth", "must be in [0, 1]");
  if (o.phrasing != "ruler") phrasing_pool(o.phrasing);  // validates the name
  std::vector<json> out;
  const std::vector<std::string> user = load_haystack(o.haystack_files);
  for (int i = 0; i < o.count; ++i) {
    Rng r(o.seed * 1000003ULL + uint64_t(i));
    size_t user_at = user.empty() ? 0 : size_t(r.below(user.size()));
    if (o.task == "cwe" || o.task == "fwe") {
      out.push_back(make_aggregation(o.task, o, tok, r, i));
      continue;
    }
    Spec s = task_spec(o.task, r, o);
    // Haystack sentences until the context (with the needles) reaches the target token count.
    int have = 0;
    for (auto& n : s.needles) have += count_tokens(n.text + " ", tok, false);
    std::vector<std::string> sents;
    while (have < o.tokens) {
      std::string t;
      if (s.needle_haystack) {  // a distractor needle with a fresh key
        std::string key;
        do key = s.uuid_keys ? random_uuid(r) : random_key(r);
        while (std::find(s.keys.begin(), s.keys.end(), key) != s.keys.end());
        t = "One of the special magic " + std::string(s.value_type == "mixed" || s.value_type == "free" ? "code" : s.value_type) + "s for " + key + " is: " + s.random_value(r) + ". ";
      } else if (!user.empty()) {  // the user's text replaces the task's own filler
        t = user[user_at++ % user.size()] + " ";
      } else {
        t = (s.essay ? essay_sentence(r) : std::string(kNoise)) + " ";
      }
      if (o.number_noise > 0 && !s.needle_haystack && r.uniform_double() < o.number_noise) t += number_sentence(r) + " ";
      have += count_tokens(t, tok, false);
      sents.push_back(std::move(t));
    }
    // One depth per needle (fixed --depth for all, else uniform), as a sentence index.
    std::vector<std::pair<size_t, size_t>> slots;  // (sentence index, needle index)
    std::vector<double> depths;
    double fixed = o.depth;
    if (o.depth_grid > 0) fixed = o.depth_grid == 1 ? 0.5 : double(i % o.depth_grid) / double(o.depth_grid - 1);
    for (size_t n = 0; n < s.needles.size(); ++n) depths.push_back(fixed >= 0 ? fixed : r.uniform_double());
    if (s.ordered) std::sort(depths.begin(), depths.end());  // chain order = text order
    for (size_t n = 0; n < s.needles.size(); ++n) slots.push_back({size_t(depths[n] * double(sents.size()) + 0.5), n});
    std::stable_sort(slots.begin(), slots.end());
    std::string context;
    std::vector<size_t> at(s.needles.size());
    size_t next = 0;
    for (size_t k = 0; k <= sents.size(); ++k) {
      for (; next < slots.size() && slots[next].first == k; ++next) {
        at[slots[next].second] = context.size();
        context += s.needles[slots[next].second].text + " ";
      }
      if (k < sents.size()) context += sents[k];
    }
    // Trim to the exact target from the end, never into a needle; if a needle is last, trim
    // haystack just before it.
    size_t last_needle_end = 0, last_needle = 0;
    for (size_t n = 0; n < at.size(); ++n)
      if (at[n] + s.needles[n].text.size() + 1 > last_needle_end) last_needle_end = at[n] + s.needles[n].text.size() + 1, last_needle = n;
    // Whole UTF-8 characters only: the character that ends at byte `end` starts at char_start(end).
    auto char_start = [&](size_t end) {
      size_t b = end - 1;
      while (b > 0 && (static_cast<unsigned char>(context[b]) & 0xC0) == 0x80) --b;
      return b;
    };
    while (int(count_tokens(context, tok, false)) > o.tokens && context.size() > last_needle_end)
      context.resize(std::max(char_start(context.size()), last_needle_end));
    while (int(count_tokens(context, tok, false)) > o.tokens && at[last_needle] > 0) {
      size_t cut = char_start(at[last_needle]);
      bool inside = false;
      for (size_t n = 0; n < at.size(); ++n) inside |= n != last_needle && cut < at[n] + s.needles[n].text.size() + 1 && at[last_needle] > at[n];
      if (inside) break;
      context.erase(cut, at[last_needle] - cut);
      at[last_needle] = cut;
    }
    json evidence = json::array();
    std::vector<double> answer_depths;
    const size_t n_evidence = s.clues.empty() ? s.answers.size() : s.clues.size();
    auto value_span = [&](size_t n) {  // [begin, end) of needle n's value (trimming never cuts a needle)
      size_t p = context.find(s.needles[n].value, at[n]);
      return json::array({p, p + s.needles[n].value.size()});
    };
    for (size_t a = 0; a < n_evidence; ++a)
      for (size_t n = 0; n < s.needles.size(); ++n)
        if (s.needles[n].answer == int(a)) {
          evidence.push_back(value_span(n));
          answer_depths.push_back(depths[n]);
        }
    out.push_back({{"id", o.task + "-" + std::to_string(o.tokens) + "-" + std::to_string(o.seed) + "-" + std::to_string(i)},
                   {"task", o.task},
                   {"context", context},
                   {"input", s.instruction.empty() ? s.question : s.instruction + " " + s.question},
                   {"target", s.target},
                   {"answers", s.answers},
                   {"length", count_tokens(context, tok, false)},
                   {"depths", answer_depths},
                   {"evidence", evidence}});
    if (!s.clues.empty()) out.back()["clues"] = s.clues;
    json distractors = json::array();  // needles of other keys: [value begin, value end, key]
    for (size_t n = 0; n < s.needles.size(); ++n)
      if (s.needles[n].answer < 0 && !s.needles[n].key.empty()) {
        json span = value_span(n);
        span.push_back(s.needles[n].key);
        distractors.push_back(span);
      }
    if (!distractors.empty()) out.back()["distractors"] = distractors;
  }
  return out;
}

json make_trajectory(const json& rec, const Tokenizer& tok, int cmin, int cmax, uint64_t seed, bool reject_distractors) {
  Rng r(seed);
  int C = cmin + int(r.below(uint64_t(cmax - cmin + 1)));
  const std::string& ctx = rec["context"].get_ref<const std::string&>();
  std::vector<Chunk> chunks = chunk_text(ctx, tok, {C, false});
  std::string question = rec["input"];
  std::string target = json_str_or(rec, "target", question, "record");
  std::vector<std::string> answers = rec["answers"].get<std::vector<std::string>>();
  // What a found evidence span adds to Clues: the fact itself (multi-hop) or the value asked for.
  std::vector<std::string> facts = rec.contains("clues") ? rec["clues"].get<std::vector<std::string>>() : answers;
  const auto& ev = rec["evidence"];
  json t = {{"id", rec["id"]}, {"task", rec["task"]}, {"query", question}, {"chunk_tokens", C}};
  json cj = json::array(), sj = json::array(), aj = json::array();
  if (rec.contains("aggregate")) {  // counting tasks: running counts in Clues, read to the end
    const size_t k = rec["aggregate"].get<size_t>();
    for (size_t ci = 0; ci < chunks.size(); ++ci) {
      cj.push_back(ctx.substr(chunks[ci].begin, chunks[ci].end - chunks[ci].begin));
      bool last = ci + 1 == chunks.size();
      auto top = top_words(ctx.substr(0, chunks[ci].end) + (last ? " " : ""), k, rec["task"] == "cwe");
      std::string clues;
      for (auto& [w, c] : top) clues += (clues.empty() ? "" : ", ") + w + " x" + std::to_string(c);
      sj.push_back("Target: " + json_str_or(rec, "target", question, "record") + "\nClues: " + (clues.empty() ? "none" : clues) +
                   "\nReason: counted the words in this part");
      aj.push_back(last ? "STOP" : "READ");
    }
    std::string answer;
    for (size_t a = 0; a < answers.size(); ++a) answer += (a ? ", " : "") + answers[a];
    t["chunks"] = cj, t["summaries"] = sj, t["actions"] = aj, t["answer"] = answer, t["eod_after_last"] = true;
    return t;
  }
  std::vector<std::string> found;
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const Chunk& c = chunks[ci];
    cj.push_back(ctx.substr(c.begin, c.end - c.begin));
    bool added = false;
    for (size_t e = 0; e < ev.size(); ++e) {
      size_t eb = ev[e][0], ee = ev[e][1];
      (void)eb;
      if (ee <= c.end && ee > c.begin) {  // the fact is complete once its last byte is read
        found.push_back(facts[std::min(e, facts.size() - 1)]);
        added = true;
      }
    }
    bool done = found.size() >= ev.size(), last = ci + 1 == chunks.size();
    std::string clues = found.empty() ? "none" : "";
    for (size_t k = 0; k < found.size(); ++k) clues += (k ? "; " : "") + found[k];
    std::string reason = added ? "found it here" : "not in this part";
    if (!added && reject_distractors && rec.contains("distractors"))  // say why a look-alike fact is not it
      for (auto& d : rec["distractors"])
        if (d[1].get<size_t>() <= c.end && d[1].get<size_t>() > c.begin) {
          reason = "the value here is for " + d[2].get<std::string>() + ", not the one asked";
          break;
        }
    sj.push_back("Target: " + target + "\nClues: " + clues + "\nReason: " + reason);
    aj.push_back(done || last ? "STOP" : "READ");
    if (done) {
      t["eod_after_last"] = last;
      break;
    }
    if (last) t["eod_after_last"] = true;
  }
  t["chunks"] = cj, t["summaries"] = sj, t["actions"] = aj;
  std::string answer;
  for (size_t k = 0; k < answers.size(); ++k) answer += (k ? ", " : "") + answers[k];
  t["answer"] = answer;  // every value asked for (string_match_all needs them all)
  return t;
}

json make_or_sample(const json& rec, bool context_first) {
  std::string answer;
  for (size_t k = 0; k < rec["answers"].size(); ++k) answer += (k ? ", " : "") + rec["answers"][k].get<std::string>();
  return {{"id", rec["id"]}, {"task", rec["task"]}, {"layout", "or"}, {"context_first", context_first},
          {"query", rec["input"]}, {"context", rec["context"]}, {"answer", answer}};
}

std::vector<json> make_nmr_samples(const json& t) {
  std::vector<json> out;
  std::string memory;
  const size_t n = t["chunks"].size();
  for (size_t r = 0; r < n; ++r) {
    json s = {{"id", t["id"].get<std::string>() + "-r" + std::to_string(r + 1)}, {"task", t["task"]}, {"layout", "nmr"},
              {"query", t["query"]}, {"memory", memory}, {"chunk", t["chunks"][r]},
              {"eod", r + 1 == n && t.value("eod_after_last", false)}, {"summary", t["summaries"][r]},
              {"action", t["actions"][r]}};
    if (t["actions"][r] == "STOP") s["answer"] = t["answer"];
    memory = t["summaries"][r];
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace sr
