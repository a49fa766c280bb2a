/**
 * llmgw-jupyter JupyterLab extension: status bar item, jobs panel, approvals,
 * notifications and commands over the gateway's REST API.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  Notification,
  showErrorMessage
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { CANCELLABLE_STATUSES, IApproval, IJobView, IToolResult } from './api';
import { CommandIDs, PALETTE_CATEGORY } from './commands';
import { askPrompt, pickItem } from './dialogs';
import { callerLabel, jobPrompt, shortId, statusLabel } from './format';
import { GatewayModel } from './model';
import { JOB_RENDERER_RANK } from './bundle';
import { jobRendererFactory } from './output';
import { GatewayPanel } from './panel';
import { GatewayStatusItem } from './statusbar';

export { GatewayModel } from './model';
export * from './api';
export { JOB_MIME_TYPE, parseJobBundle } from './bundle';

const PLUGIN_ID = 'llmgw-jupyter:plugin';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 4h16v3H4zM4 10.5h16v3H4zM4 17h10v3H4z"/>
    <circle cx="19" cy="18.5" r="2.5"/>
  </g>
</svg>`;

export const gatewayIcon = new LabIcon({
  name: 'llmgw-jupyter:jobs',
  svgstr: ICON_SVG
});

/** Settings of the plugin (schema/plugin.json). */
interface ISettings {
  pollInterval: number;
  notifications: boolean;
}

const DEFAULT_SETTINGS: ISettings = { pollInterval: 5, notifications: true };

function readSettings(settings: ISettingRegistry.ISettings | null): ISettings {
  if (!settings) {
    return { ...DEFAULT_SETTINGS };
  }
  const poll = settings.get('pollInterval').composite;
  const notify = settings.get('notifications').composite;
  return {
    pollInterval:
      typeof poll === 'number' && poll > 0
        ? poll
        : DEFAULT_SETTINGS.pollInterval,
    notifications:
      typeof notify === 'boolean' ? notify : DEFAULT_SETTINGS.notifications
  };
}

function jobLabel(job: IJobView): string {
  const prompt = (job.prompt_preview ?? '').slice(0, 50);
  return `${shortId(job.id)} · ${statusLabel(job.status)} · ${callerLabel(job.caller)} · ${prompt}`;
}

function approvalLabel(approval: IApproval): string {
  return `${shortId(approval.id)} · ${approval.tool} · ${callerLabel(approval.caller)}`;
}

function startedJobId(result: IToolResult): string | null {
  const s: { [key: string]: any } = result.structured ?? {};
  const id = s.job_id ?? s.id ?? s.job?.id ?? null;
  return typeof id === 'string' ? id : null;
}

async function reportError(title: string, error: unknown): Promise<void> {
  const message = (error as Error)?.message ?? String(error);
  Notification.error(`${title}: ${message}`, { autoClose: 8000 });
}

/** Argument schemas of the commands (for `describedBy`). */
const JOB_ARGS = {
  args: {
    type: 'object',
    properties: {
      jobId: {
        type: 'string',
        description: 'Job id; asked for when missing'
      }
    }
  }
};
const APPROVAL_ARGS = {
  args: {
    type: 'object',
    properties: {
      approvalId: {
        type: 'string',
        description: 'Approval id; asked for when missing'
      }
    }
  }
};
const NO_ARGS = { args: { type: 'object', properties: {} } };

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Agent jobs of the llmgw gateway: status bar, jobs panel, approvals.',
  autoStart: true,
  optional: [
    IStatusBar,
    ICommandPalette,
    INotebookTracker,
    IRenderMimeRegistry,
    ISettingRegistry,
    ILayoutRestorer
  ],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null,
    rendermime: IRenderMimeRegistry | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null
  ) => {
    const { commands, shell } = app;
    let settings: ISettings = { ...DEFAULT_SETTINGS };
    const model = new GatewayModel({
      serverSettings: app.serviceManager.serverSettings,
      pollInterval: settings.pollInterval
    });

    if (rendermime) {
      // Notebook outputs of jobs: a live view that needs no kernel. Added
      // here, before any notebook opens (each clones this registry).
      rendermime.addFactory(
        jobRendererFactory({ model, commands, rendermime }),
        JOB_RENDERER_RANK
      );
    }

    const panel = new GatewayPanel({ model, commands, rendermime });
    panel.title.icon = gatewayIcon;
    panel.title.caption = 'Agent jobs';
    shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, 'llmgw-panel');
    }

    const openPanel = () => {
      shell.activateById(panel.id);
    };

    if (statusBar) {
      const item = new GatewayStatusItem(model, openPanel);
      statusBar.registerStatusItem(PLUGIN_ID + ':status', {
        item,
        align: 'left',
        rank: 5
      });
    }

    // Notifications for approvals that arrive while the panel is hidden;
    // each goes away once its approval is decided (here or elsewhere).
    const approvalToasts = new Map<string, string>();
    model.approvalsArrived.connect((_, approvals) => {
      if (!settings.notifications || panel.isVisible) {
        return;
      }
      for (const approval of approvals) {
        const toast = Notification.warning(
          `Agents: ${callerLabel(approval.caller)} asks to run ${approval.tool}; approval needed.`,
          {
            autoClose: false,
            actions: [
              {
                label: 'Review',
                caption: 'Open the agent jobs panel',
                callback: openPanel
              }
            ]
          }
        );
        approvalToasts.set(approval.id, toast);
      }
    });
    model.approvalsChanged.connect((_, approvals) => {
      const pending = new Set(approvals.map(approval => approval.id));
      for (const [approvalId, toast] of approvalToasts) {
        if (!pending.has(approvalId)) {
          Notification.dismiss(toast);
          approvalToasts.delete(approvalId);
        }
      }
    });

    const findJob = (jobId: string | undefined) =>
      jobId ? model.getJob(jobId) : undefined;

    const chooseJob = async (
      args: { jobId?: unknown },
      title: string,
      accept: (job: IJobView) => boolean
    ): Promise<IJobView | null> => {
      if (typeof args.jobId === 'string' && args.jobId) {
        const job = findJob(args.jobId);
        if (job) {
          return job;
        }
        // Not in the current list (filter): fetch it.
        await model.refreshNow().catch(() => undefined);
        return findJob(args.jobId) ?? null;
      }
      const candidates = new Map<string, string>();
      for (const job of model.jobs.filter(accept)) {
        candidates.set(jobLabel(job), job.id);
      }
      if (candidates.size === 0) {
        Notification.info('No matching agent job.', { autoClose: 4000 });
        return null;
      }
      const jobId = await pickItem(title, 'Job', candidates);
      return jobId ? (findJob(jobId) ?? null) : null;
    };

    const chooseApproval = async (
      args: { approvalId?: unknown },
      title: string
    ): Promise<string | null> => {
      if (typeof args.approvalId === 'string' && args.approvalId) {
        return args.approvalId;
      }
      const candidates = new Map<string, string>();
      for (const approval of model.approvals) {
        candidates.set(approvalLabel(approval), approval.id);
      }
      if (candidates.size === 0) {
        Notification.info('No pending approval.', { autoClose: 4000 });
        return null;
      }
      return pickItem(title, 'Approval', candidates);
    };

    commands.addCommand(CommandIDs.openPanel, {
      describedBy: NO_ARGS,
      label: 'Open Agent Jobs Panel',
      caption: 'Show the llmgw jobs panel',
      icon: gatewayIcon,
      execute: openPanel
    });

    commands.addCommand(CommandIDs.refresh, {
      describedBy: NO_ARGS,
      label: 'Refresh Agent Jobs',
      execute: async () => {
        try {
          await model.refreshNow();
        } catch (error) {
          await reportError('Refresh failed', error);
        }
      }
    });

    commands.addCommand(CommandIDs.cancelJob, {
      describedBy: JOB_ARGS,
      label: args => (args.jobId ? 'Cancel Job' : 'Cancel Agent Job…'),
      caption: 'Cancel a queued or running job',
      execute: async args => {
        const job = await chooseJob(args, 'Cancel which job?', j =>
          CANCELLABLE_STATUSES.has(j.status)
        );
        if (!job) {
          return;
        }
        try {
          await model.cancelJob(job.id);
        } catch (error) {
          await reportError(`Cancelling job ${shortId(job.id)} failed`, error);
        }
      }
    });

    const decide = (action: 'approve' | 'deny') => async (args: any) => {
      const title =
        action === 'approve' ? 'Approve which request?' : 'Deny which request?';
      const approvalId = await chooseApproval(args, title);
      if (!approvalId) {
        return;
      }
      try {
        if (action === 'approve') {
          await model.approve(approvalId);
        } else {
          await model.deny(approvalId);
        }
      } catch (error) {
        await reportError(
          `${action === 'approve' ? 'Approving' : 'Denying'} failed`,
          error
        );
      }
    };

    commands.addCommand(CommandIDs.approve, {
      describedBy: APPROVAL_ARGS,
      label: args =>
        args.approvalId ? 'Approve' : 'Approve Pending Agent Request…',
      execute: decide('approve')
    });

    commands.addCommand(CommandIDs.deny, {
      describedBy: APPROVAL_ARGS,
      label: args => (args.approvalId ? 'Deny' : 'Deny Pending Agent Request…'),
      execute: decide('deny')
    });

    commands.addCommand(CommandIDs.fork, {
      describedBy: JOB_ARGS,
      label: args => (args.jobId ? 'Fork…' : 'Fork Agent Session…'),
      caption: "Start a new job from a job's session with a new prompt",
      execute: async args => {
        const job = await chooseJob(
          args,
          'Fork the session of which job?',
          j => !!j.session_id
        );
        if (!job) {
          return;
        }
        if (!job.session_id) {
          await showErrorMessage(
            'Cannot fork',
            `Job ${job.id} has no session yet.`
          );
          return;
        }
        const prompt = await askPrompt({
          title: `Fork session ${shortId(job.session_id)}`,
          label: 'Prompt for the forked session:',
          accept: 'Fork'
        });
        if (!prompt) {
          return;
        }
        try {
          const result = await model.fork(job.session_id, prompt, job.provider);
          const id = startedJobId(result);
          Notification.success(
            id ? `Fork started as job ${shortId(id)}.` : 'Fork started.',
            { autoClose: 5000 }
          );
        } catch (error) {
          await reportError('Fork failed', error);
        }
      }
    });

    commands.addCommand(CommandIDs.rerun, {
      describedBy: JOB_ARGS,
      label: args => (args.jobId ? 'Re-run…' : 'Re-run Agent Job…'),
      caption: "Run a job's request again with a new prompt",
      execute: async args => {
        const job = await chooseJob(args, 'Re-run which job?', () => true);
        if (!job) {
          return;
        }
        const prompt = await askPrompt({
          title: `Re-run job ${shortId(job.id)}`,
          label: 'Prompt:',
          initial: jobPrompt(job),
          accept: 'Run'
        });
        if (!prompt) {
          return;
        }
        try {
          const result = await model.rerun(job, prompt);
          const id = startedJobId(result);
          Notification.success(
            id ? `Started job ${shortId(id)}.` : 'Job started.',
            { autoClose: 5000 }
          );
        } catch (error) {
          await reportError('Re-run failed', error);
        }
      }
    });

    commands.addCommand(CommandIDs.insertMagic, {
      describedBy: JOB_ARGS,
      label: args =>
        args.jobId
          ? `Insert %llm_job ${args.jobId}`
          : 'Insert %llm_job Into Notebook…',
      caption: 'Insert a code cell with %llm_job ID below the active cell',
      isEnabled: () => !!notebooks?.currentWidget,
      execute: async args => {
        const panelWidget = notebooks?.currentWidget;
        if (!panelWidget) {
          await showErrorMessage(
            'No notebook',
            'Open a notebook to insert %llm_job.'
          );
          return;
        }
        const job = await chooseJob(args, 'Insert which job?', () => true);
        const jobId =
          job?.id ?? (typeof args.jobId === 'string' ? args.jobId : null);
        if (!jobId) {
          return;
        }
        const notebook = panelWidget.content;
        NotebookActions.insertBelow(notebook);
        NotebookActions.changeCellType(notebook, 'code');
        const cell = notebook.activeCell;
        if (cell) {
          cell.model.sharedModel.setSource(`%llm_job ${jobId}`);
        }
        shell.activateById(panelWidget.id);
      }
    });

    if (palette) {
      for (const command of [
        CommandIDs.openPanel,
        CommandIDs.refresh,
        CommandIDs.cancelJob,
        CommandIDs.approve,
        CommandIDs.deny,
        CommandIDs.fork,
        CommandIDs.rerun,
        CommandIDs.insertMagic
      ]) {
        palette.addItem({ command, category: PALETTE_CATEGORY });
      }
    }

    const applySettings = (loaded: ISettingRegistry.ISettings | null) => {
      settings = readSettings(loaded);
      model.pollInterval = settings.pollInterval;
    };

    const loadSettings = settingRegistry
      ? settingRegistry
          .load(PLUGIN_ID)
          .then(loaded => {
            applySettings(loaded);
            loaded.changed.connect(() => applySettings(loaded));
          })
          .catch(reason => {
            console.warn('llmgw-jupyter: settings not loaded', reason);
          })
      : Promise.resolve();

    void Promise.all([loadSettings, app.restored]).then(() => model.start());
  }
};

export default plugin;
