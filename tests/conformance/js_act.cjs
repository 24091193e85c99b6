// Drives the stand-in's issue-17 features with the official JS SDK (@lmstudio/sdk):
// model.act() with tools, images (prepareImageBase64 + a vision model), presets, draft
// models and the repository namespace. Run by test_official_js_agents.py; prints one JSON line.
const path = require("path");
const sdk = require(process.env.LMS_SDK_PATH);
const { z } = require(path.join(process.env.LMS_SDK_PATH, "../../../../zod"));
const { LMStudioClient, tool, rawFunctionTool, Chat } = sdk;

async function main() {
  const quiet = { info() {}, warn() {}, error: console.error, debug() {} };
  const client = new LMStudioClient({ baseUrl: process.argv[2], logger: quiet });
  const out = {};
  const model = await client.llm.model("qwen2.5-7b-instruct-1m");

  // act: a zod tool found from the numbers in the message, then an answer quoting it
  const calls = [];
  const add = tool({
    name: "add",
    description: "Add two integers",
    parameters: { a: z.number().int(), b: z.number().int() },
    implementation: ({ a, b }) => { calls.push(["add", a, b]); return a + b; },
  });
  const rounds = [];
  const result = await model.act("What is the sum of 123 and 3210?", [add], {
    onMessage: m => rounds.push(m.getRole()),
  });
  out.actRounds = result.rounds;
  out.actCalls = calls.slice();
  out.actRoles = rounds;
  const finalText = [];
  const chat = Chat.from("Divide 7 by 2 with divide, and multiply 3 by 4 using multiply");
  const divide = rawFunctionTool({
    name: "divide",
    description: "Divide",
    parametersJsonSchema: {
      type: "object",
      properties: { numerator: { type: "number" }, denominator: { type: "number" } },
      required: ["numerator", "denominator"],
    },
    implementation: ({ numerator, denominator }) => { calls.push(["divide", numerator, denominator]); return numerator / denominator; },
  });
  const multiply = tool({
    name: "multiply",
    description: "Multiply",
    parameters: { x: z.number(), y: z.number() },
    implementation: ({ x, y }) => { calls.push(["multiply", x, y]); return `product ${x * y}`; },
  });
  const two = await model.act(chat, [divide, multiply], {
    onMessage: m => { if (m.getRole() === "assistant") finalText.push(m.getText()); },
  });
  out.parallelRounds = two.rounds;
  out.parallelCalls = calls.slice(1);
  out.parallelAnswer = finalText[finalText.length - 1];

  // images: upload, a vision model describes it, a text model refuses it
  const png = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAADCAIAAAA2iEnWAAAAEklEQVR42mNgYPjPwMDAxMAAAA0gAQEd5TcgAAAAAElFTkSuQmCC",
    "base64",
  );
  const image = await client.files.prepareImageBase64("tiny.png", png.toString("base64"));
  out.imageType = image.type;
  const vlm = await client.llm.model("mobilevlm_v2-1.7b");
  const seen = await vlm.respond([{ role: "user", content: "What is this?", images: [image] }]);
  out.vision = seen.content.split(". ")[0];
  const text = await client.llm.model("llama-3.2-1b-instruct");
  try { await text.respond([{ role: "user", content: "What is this?", images: [image] }]); out.noVision = "no error"; }
  catch (e) { out.noVision = String(e.message).includes("does not support images") ? "refused" : String(e.message); }

  // presets and draft models
  const preset = await text.respond("Hello", { preset: "@local:concise" });
  out.presetTokens = preset.stats.predictedTokensCount;
  try { await text.respond("Hello", { preset: "nope" }); out.badPreset = "no error"; }
  catch (e) { out.badPreset = String(e.message).includes("nope") ? "rejected" : String(e.message); }
  const drafted = await text.respond("Hello", { draftModel: "smollm2-135m-instruct" });
  out.draft = drafted.stats.usedDraftModelKey;
  out.draftAccepted = drafted.stats.acceptedDraftTokensCount;

  // repository: search, options, download with progress, then load it
  const results = await client.repository.searchModels({ searchTerm: "qwen 0.5b" });
  out.search = results.map(r => r.name);
  const options = await results[0].getDownloadOptions();
  out.options = options.map(o => o.quantization);
  const progress = [];
  out.downloaded = await options[0].download({ onProgress: p => progress.push(p.downloadedBytes) });
  out.progressSteps = progress.length;
  out.listed = (await client.system.listDownloadedModels()).some(m => m.modelKey === out.downloaded);
  const loaded = await client.llm.load(out.downloaded);
  out.loadedKey = loaded.modelKey;
  console.log(JSON.stringify(out));
  process.exit(0);
}
main().catch(e => { console.error("FAILED", e); process.exit(1); });
