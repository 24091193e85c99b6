// Drives the stand-in with the official JS SDK (@lmstudio/sdk); run by test_official_js.py.
const { LMStudioClient } = require(process.env.LMS_SDK_PATH);
async function main() {
  const client = new LMStudioClient({ baseUrl: process.argv[2], logger: { info(){}, warn: console.error, error: console.error, debug(){} } });
  const out = {};
  const downloaded = await client.system.listDownloadedModels();
  out.downloaded = downloaded.map(m => m.modelKey);
  const progress = [];
  const llm = await client.llm.load("llama-3.2-1b-instruct", { identifier: "js-llama", config: { contextLength: 4096 }, onProgress: p => progress.push(p) });
  out.identifier = llm.identifier;
  out.progressLast = progress[progress.length - 1];
  out.contextLength = await llm.getContextLength();
  const cfg = await llm.getLoadConfig();
  // @lmstudio/sdk 1.5 returns the raw KVConfig here; later versions return parsed fields.
  out.cfgContext = Array.isArray(cfg.fields)
    ? cfg.fields.find(f => f.key === "llm.load.contextLength").value
    : cfg.contextLength;
  try { await client.llm.load("smollm2-135m-instruct", { identifier: "js-llama" }); out.dup = "no error"; }
  catch (e) { out.dup = String(e.message).includes("already exists") ? "already exists" : String(e.message); }
  const smol = await client.llm.model("smollm2-135m-instruct");
  out.smol = smol.identifier;
  const any = await client.llm.model();
  out.any = any.identifier;
  out.loaded = (await client.llm.listLoaded()).map(m => m.identifier);
  const ctrl = new AbortController();
  const p = client.llm.load("qwen2.5-7b-instruct-1m", { signal: ctrl.signal });
  setTimeout(() => ctrl.abort(), 100);
  try { await p; out.cancel = "loaded"; } catch (e) { out.cancel = "rejected"; }
  await llm.unload();
  try { await client.llm.unload("nope"); out.unloadUnknown = "no error"; } catch (e) { out.unloadUnknown = "rejected"; }
  const emb = await client.embedding.load("text-embedding-nomic-embed-text-v1.5");
  out.embContext = await emb.getContextLength();
  out.embInfo = (await emb.getModelInfo()).modelKey;
  await new Promise(r => setTimeout(r, 300));
  out.loadedAfter = (await client.llm.listLoaded()).map(m => m.identifier);
  console.log(JSON.stringify(out));
  process.exit(0);
}
main().catch(e => { console.error("FAILED", e); process.exit(1); });
