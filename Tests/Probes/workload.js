// A representative Node.js workload for the seccomp profiles (seccomp/README.md): workers,
// fs (sync, callbacks, promises, streams, watch), child_process, net and http on lo, dgram,
// crypto, zlib, timers, dns.lookup of localhost. Prints WORKLOAD-OK last; any failure throws.
const assert = require('assert');
const { Worker } = require('worker_threads');
const fs = require('fs'), fsp = require('fs/promises'), os = require('os'), path = require('path');
const cp = require('child_process'), net = require('net'), http = require('http');
const dgram = require('dgram'), crypto = require('crypto'), zlib = require('zlib'), dns = require('dns');

async function main() {
  // Workers.
  const sums = await Promise.all([1, 2, 3].map(n => new Promise((resolve, reject) => {
    const w = new Worker('const {parentPort, workerData} = require("worker_threads"); parentPort.postMessage(workerData * 2)', { eval: true, workerData: n });
    w.on('message', resolve); w.on('error', reject);
  })));
  assert.deepStrictEqual(sums, [2, 4, 6]);

  // fs.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wl-'));
  const file = path.join(dir, 'f.txt');
  fs.writeFileSync(file, 'data'.repeat(1000));
  assert.strictEqual(fs.readFileSync(file, 'utf8').length, 4000);
  await fsp.appendFile(file, 'more');
  await new Promise((res, rej) => fs.stat(file, (e, st) => e ? rej(e) : res(st)));
  fs.renameSync(file, file + '.2'); fs.symlinkSync(file + '.2', file); fs.chmodSync(file + '.2', 0o600);
  assert.ok(fs.readdirSync(dir).length === 2);
  await new Promise((res, rej) => fs.createReadStream(file).on('data', () => {}).on('end', res).on('error', rej));
  const watcher = fs.watch(dir); watcher.close();
  fs.utimesSync(file, new Date(), new Date()); fs.truncateSync(file + '.2', 10);
  fs.rmSync(dir, { recursive: true });

  // child_process.
  assert.ok(cp.execSync('echo hello | cat; ls / > /dev/null').toString().startsWith('hello'));
  await new Promise((res, rej) => cp.spawn('sh', ['-c', 'true']).on('exit', c => c === 0 ? res() : rej(c)));
  cp.spawnSync(process.execPath, ['-e', 'process.exit(0)']);

  // net, http, dgram on lo; dns.lookup of localhost.
  const server = net.createServer(s => s.pipe(s)).listen(0, '127.0.0.1');
  await new Promise(r => server.on('listening', r));
  await new Promise((res, rej) => {
    const c = net.connect(server.address().port, '127.0.0.1', () => c.write('ping'));
    c.on('data', d => { assert.strictEqual(d.toString(), 'ping'); c.end(); res(); }).on('error', rej);
  });
  server.close();
  const hs = http.createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1');
  await new Promise(r => hs.on('listening', r));
  await new Promise((res, rej) => http.get(`http://127.0.0.1:${hs.address().port}/`, r => {
    let b = ''; r.on('data', d => b += d); r.on('end', () => { assert.strictEqual(b, 'ok'); res(); });
  }).on('error', rej));
  hs.close();
  const u = dgram.createSocket('udp4');
  await new Promise(r => u.bind(0, '127.0.0.1', r));
  await new Promise(r => { u.on('message', r); u.send('x', u.address().port, '127.0.0.1'); });
  u.close();
  await new Promise((res, rej) => dns.lookup('localhost', e => e ? rej(e) : res()));

  // crypto, zlib, timers, os.
  crypto.createHash('sha256').update('x').digest('hex'); crypto.randomBytes(16);
  await new Promise((res, rej) => crypto.pbkdf2('p', 's', 1000, 32, 'sha256', e => e ? rej(e) : res()));
  zlib.gunzipSync(zlib.gzipSync('x'.repeat(100)));
  await new Promise(r => setTimeout(r, 5)); await new Promise(r => setImmediate(r));
  os.cpus(); os.networkInterfaces(); os.userInfo(); os.loadavg(); process.memoryUsage(); process.hrtime.bigint();
  process.cpuUsage(); process.resourceUsage(); os.setPriority(os.getPriority() + 1); process.umask();

  // More fs: copies, recursive copy, file handles, fsync, links, ownership, fifos, streams.
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'wl2-'));
  fs.mkdirSync(path.join(work, 'src/sub'), { recursive: true });
  fs.writeFileSync(path.join(work, 'src/sub/a.txt'), 'x'.repeat(100000));
  fs.copyFileSync(path.join(work, 'src/sub/a.txt'), path.join(work, 'b.txt'));
  fs.cpSync(path.join(work, 'src'), path.join(work, 'dst'), { recursive: true });
  const fh = await fsp.open(path.join(work, 'b.txt'), 'r+');
  await fh.read(Buffer.alloc(10), 0, 10, 0); await fh.write('y', 5); await fh.sync(); await fh.datasync(); await fh.stat(); await fh.close();
  fs.linkSync(path.join(work, 'b.txt'), path.join(work, 'c.txt')); fs.chownSync(path.join(work, 'c.txt'), process.getuid(), process.getgid());
  fs.accessSync(work, fs.constants.W_OK); fs.realpathSync(work); fs.lstatSync(work); fs.opendirSync(work).closeSync();
  await new Promise((res, rej) => fs.createReadStream(path.join(work, 'b.txt')).pipe(zlib.createGzip()).pipe(fs.createWriteStream(path.join(work, 'b.gz'))).on('finish', res).on('error', rej));
  fs.rmSync(work, { recursive: true, force: true });

  // Workers with shared memory and Atomics; child_process.fork with IPC; a shell with common tools.
  const sab = new SharedArrayBuffer(8);
  await new Promise((resolve, reject) => {
    const w = new Worker('const {workerData} = require("worker_threads"); const a = new Int32Array(workerData); Atomics.store(a, 0, 1); Atomics.notify(a, 0);', { eval: true, workerData: sab });
    w.on('exit', resolve); w.on('error', reject);
  });
  const mod = path.join(os.tmpdir(), 'wl-child.js');
  fs.writeFileSync(mod, 'process.on("message", m => { process.send(m * 2); process.disconnect(); })');
  const forked = cp.fork(mod);
  await new Promise((res, rej) => { forked.on('message', m => { assert.strictEqual(m, 42); res(); }); forked.on('error', rej); forked.send(21); });
  cp.execSync("set -e; cd /tmp; ls -la / >/dev/null; cat /etc/os-release >/dev/null; sort /etc/passwd | head -1 >/dev/null; " +
    "tar cf t.tar -C /etc os-release; gzip -f t.tar; rm -f t.tar.gz; date >/dev/null; sleep 0.01; grep -c root /etc/passwd >/dev/null; " +
    "cp /etc/os-release x && mv x y && rm y; mkdir -p d/e && rmdir d/e d; env >/dev/null", { shell: '/bin/sh' });
  cp.execFileSync('bash', ['-c', 'for i in 1 2; do echo $i; done | while read l; do :; done']);

  // Unix socket server, IPv6 loopback (when the namespace has it), crypto in the thread pool.
  const upath = path.join(os.tmpdir(), 'wl.sock');
  const us = net.createServer(s => s.end('u')).listen(upath);
  await new Promise(r => us.on('listening', r));
  await new Promise((res, rej) => net.connect(upath).on('data', () => res()).on('error', rej));
  us.close();
  await new Promise(r => { const s6 = net.createServer().listen(0, '::1', () => { s6.close(); r(); }).on('error', () => r()); });
  await new Promise((res, rej) => crypto.generateKeyPair('ec', { namedCurve: 'P-256' }, e => e ? rej(e) : res()));
  await new Promise((res, rej) => crypto.scrypt('p', 's', 32, e => e ? rej(e) : res()));
  console.log('WORKLOAD-OK');
}
main().catch(e => { console.error(e); process.exit(1); });
