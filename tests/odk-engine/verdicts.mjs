// ODK's own form engine (@getodk/xforms-engine, the engine of ODK Web Forms) on an XForm and
// sets of answers: what it says of every question.
//
//     node verdicts.mjs < request.json > verdicts.json
//
// The request is `{"forms": [{"xform": "<h:html …>", "answers": [{"name": "value", …}, …]}, …]}`,
// each value
// in the XForm's text form (a select_multiple's codes joined by spaces), `null` for none. For
// each set the engine starts a new instance and answers the questions in the form's order,
// the way a person fills it: a question is answered only if it is shown (relevant) when its
// turn comes; a repeat's answers are a list, one set per item. It prints, for each form,
// `{"sets": [...], "today": "YYYY-MM-DD"}` (or `{"error": "…"}` when the engine cannot load
// it), and in each set each question outside the form's `meta`:
// `{"name": {"set": bool, "relevant": bool, "required": bool, "constraint": bool, "value": "…"}}`
// (`constraint` false when the engine finds the value breaks the question's constraint), a
// repeat as `{"relevant": bool, "items": [{…its questions…}, …]}`.
import { readFileSync } from 'node:fs';
import { createInstance, questions, nameOf, fill } from './engine.mjs';

const request = JSON.parse(readFileSync(0, 'utf8'));
// What the engine says of each question under `node`; a repeat's items each in turn.
function report(node, set, prefix = '') {
  const out = {};
  for (const q of questions(node)) {
    const name = nameOf(q);
    const state = q.currentState;
    if (q.nodeType.startsWith('repeat-range')) {
      out[name] = {
        type: q.nodeType,
        relevant: state.relevant,
        items: state.children.map((item, i) => report(item, set, `${prefix}${name}[${i}].`)),
      };
      continue;
    }
    out[name] = {
      type: q.nodeType,
      set: set.has(prefix + name),
      relevant: state.relevant,
      required: state.required,
      constraint: q.validationState?.constraint?.valid ?? true,
      value: state.instanceValue ?? null,
    };
  }
  return out;
}

async function verdicts(xform, answers) {
  const form = await createInstance(xform, {
    form: { fetchFormAttachment: async () => new Response('') },
  });
  const root = form.root ?? form;
  const set = new Set();
  fill(root, answers, set);
  return report(root, set);
}

const out = [];
for (const { xform, answers } of request.forms) {
  try {
    const sets = [];
    for (const one of answers) sets.push(await verdicts(xform, one));
    // The day as the engine reads today(): the local date.
    const now = new Date();
    const today = `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, "0")}-${String(now.getDate()).padStart(2, "0")}`;
    out.push({ sets, today });
  } catch (e) {
    out.push({ error: String(e?.message ?? e) });
  }
}
process.stdout.write(JSON.stringify(out));
