import { sidecarConfig } from '../proxy/config.js';
import { startSidecar } from '../proxy/sidecar.js';
const sc = await startSidecar(sidecarConfig({ appPort: Number(process.argv[2]), auditMode: (process.argv[3] ?? 'off') as 'off', journalDir: '/tmp/prof/j' + Date.now(), keyFile: '/tmp/prof/k', redactionKeyFile: '/tmp/prof/rk' }));
console.log(JSON.stringify({ port: sc.ports.inbound }));
process.on('SIGINT', () => { void sc.close().then(() => process.exit(0)); });
