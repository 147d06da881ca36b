// ODK's own form engine fills XForms as a person would and makes the submissions ODK Collect
// would send.
//
//     node submit.mjs < request.json > submissions.json
//
// The request is `{"forms": [{"xform": "<h:html …>", "attachments": {"child.csv": "…"},
// "answers": {"name": "value", …}, "edit": "<data …>…</data>"?}, …]}`: answers in the
// XForm's text form as for verdicts.mjs, the form's attachments (entity lists) by file name.
// With `edit`, the engine opens that submitted instance for editing first (as ODK's web
// forms edit a sent submission) and the answers change it. Prints, for each form,
// `{"status": "ready" | "pending", "xml": "…", "violations": […]}` or `{"error": "…"}`.
import { readFileSync } from 'node:fs';
import { createInstance, fill } from './engine.mjs';

const request = JSON.parse(readFileSync(0, 'utf8'));

async function submission({ xform, attachments = {}, answers = {}, edit }) {
  const config = {
    form: {
      fetchFormAttachment: async (url) => {
        const name = String(url).split('/').pop();
        return new Response(attachments[name] ?? '', { headers: { 'Content-Type': 'text/csv' } });
      },
    },
  };
  let form;
  if (edit) {
    const { editInstance } = await import('@getodk/xforms-engine');
    form = await editInstance(
      xform,
      { inputType: 'FORM_INSTANCE_INPUT_RESOLVABLE', resolveInstance: () => edit, attachments: new Map() },
      config,
    );
  } else {
    form = await createInstance(xform, config);
  }
  const root = form.root ?? form;
  fill(root, answers, new Set());
  const payload = await root.prepareInstancePayload();
  const file = payload.data[0].get('xml_submission_file');
  return {
    status: payload.status,
    xml: await file.text(),
    violations: (payload.violations ?? []).map((v) => String(v.reference ?? v.nodeId ?? JSON.stringify(v))),
  };
}

const out = [];
for (const one of request.forms) {
  try {
    out.push(await submission(one));
  } catch (e) {
    out.push({ error: String(e?.stack ?? e?.message ?? e) });
  }
}
process.stdout.write(JSON.stringify(out));
